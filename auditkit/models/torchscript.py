"""Model format: a TorchScript file (``torch.jit.save``), run as is; no layer hooks."""
from __future__ import annotations

import warnings

import torch

from auditkit.errors import UsageError
from auditkit.models.format import ModelOptions, first_line, make_target, model_format, refuse_weights
from auditkit.models.torch_files import kind_name, model_file
from auditkit.target import Target

KIND = "torchscript"


def owns(spec: str) -> bool:
    return model_file(spec, KIND) is not None


def load(spec: str, options: ModelOptions) -> Target:
    refuse_weights(spec, options, f"a {kind_name(KIND)}")
    path = model_file(spec, KIND)
    with warnings.catch_warnings():
        # Deprecation advice for whoever wrote the file, not for the auditor loading it.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"model {spec!r}: not loadable as TorchScript: {first_line(exc)}") from exc
    original = getattr(model, "original_name", type(model).__name__)
    # Python forward hooks are not supported on ScriptModules: no layers, no Grad-CAM.
    description = f"TorchScript {original} from {path.name} (no layer hooks)"
    return make_target(model, spec, options, hookable=False, description=description)


auditkit_load_model = model_format(owns, load)
