"""Model format: a whole module saved with ``torch.save(model)``, loaded only with
``--trust-pickle`` (unpickling runs arbitrary code); anything else it holds is refused."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from auditkit.errors import UsageError
from auditkit.models.format import ModelOptions, describe_spec_forms, make_target, model_format
from auditkit.models.state_dict import extract_state_dict, load_weights_file
from auditkit.models.torch_files import TensorsOnlyRefused, load_tensors_only, model_file, torch_error_text
from auditkit.target import Target

KIND = "torch.save"


def owns(spec: str) -> bool:
    return model_file(spec, KIND) is not None


def load(spec: str, options: ModelOptions) -> Target:
    path = model_file(spec, KIND)
    try:
        obj = load_tensors_only(path, f"model {spec!r}")
    except TensorsOnlyRefused as refused:
        if not options.trust_pickle:
            if refused.needs is None:
                raise UsageError(
                    f"model {spec!r}: torch's tensors-only loader cannot read this torch.save file "
                    f"({refused.reason}; saved with a pickle_protocol above 2?); expected a TorchScript file or a "
                    "torch.export archive, or a state_dict with --model file.py:factory --weights PATH"
                ) from None
            # It names a Python class or function: loading it would run that code.
            raise UsageError(
                f"model {spec!r} is a pickled Python object that needs {refused.needs}, refused: unpickling runs "
                "arbitrary code; pass --trust-pickle if you trust this file, "
                "or save a state_dict / TorchScript / torch.export archive instead"
            ) from None
    else:
        _refuse_non_module(spec, obj)  # tensors and containers only: never a module
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(
            f"model {spec!r}: unpickling failed: {torch_error_text(exc)} "
            f"(the classes it names must be importable here)"
        ) from exc
    _refuse_non_module(spec, obj)
    description = f"pickled {type(obj).__name__} from {path.name} (trusted)"
    if options.weights:
        load_weights_file(obj, options.weights, spec)
        description += f", weights from {options.weights}"
    return make_target(obj, spec, options, description=description)


def _refuse_non_module(spec: str, obj: Any) -> None:
    if isinstance(obj, nn.Module):
        return
    if extract_state_dict(obj) is not None:
        raise UsageError(
            f"model {spec!r} holds a state_dict, not a model: give the architecture as --model file.py:factory "
            "--weights PATH"
        )
    raise UsageError(
        f"model {spec!r} holds {type(obj).__name__}, not a model; expected one of: {describe_spec_forms()}"
    )



auditkit_load_model = model_format(owns, load)
