"""Model format ``PATH.onnx[#option=value&...]``: black-box targets from ONNX files, run through onnxruntime (the optional extra
``pip install auditkit[onnx]``): batched, any static batch size, NCHW or NHWC inputs."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from auditkit.errors import TargetError, UsageError
from auditkit.models.blackbox import SCORE_READINGS, scores_to_probabilities
from auditkit.models.format import (
    ModelOptions,
    SpecOption,
    first_line,
    is_http_spec,
    model_format,
    refuse_weights,
    split_options,
)
from auditkit.target import BlackBoxTarget

INSTALL_HINT = "pip install auditkit[onnx]"
_INPUT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
_LABEL_DTYPES = frozenset({"tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(uint8)"})

ONNX_OPTIONS: dict[str, SpecOption] = {
    "batch_size": SpecOption(int, "images per onnxruntime run, default 64", minimum=1),
    "output": SpecOption(str, "name of the graph output to read, default the first"),
    "scores": SpecOption(str, "whether score rows are probabilities or logits, default auto", choices=SCORE_READINGS),
    "threads": SpecOption(int, "onnxruntime intra-op threads, default torch's thread count", minimum=1),
}


def import_onnxruntime(what: str) -> Any:
    """onnxruntime, or a UsageError naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise UsageError(f"{what}: ONNX models run through onnxruntime, which is not installed; run `{INSTALL_HINT}`") from exc
    return onnxruntime


class ONNXTarget(BlackBoxTarget):
    """An ONNX classifier audited as a black box (no gradients), through onnxruntime.

    The graph must have one image input, float32/float16/float64, rank 4, NCHW or NHWC
    (found from which axis has 3 channels; NCHW when both are symbolic). It receives pixels
    in [0, 1], normalized first by ``mean``/``std`` when given. The output read (the first,
    or ``output``) gives scores [B,K] (probabilities or logits, see ``scores``) or integer
    labels [B]. A graph with a fixed batch size is run in chunks of that size, the last one
    padded (only real images are counted).

    :param path: the ``.onnx`` file.
    :param output: name of the output to read; default the graph's first output.
    :param batch_size: images per run (when the batch axis is not fixed).
    :param scores: ``"auto"``, ``"probs"`` or ``"logits"`` (see
        :func:`auditkit.models.blackbox.scores_to_probabilities`).
    :param mean: per-channel normalization applied before the graph (None: none).
    :param std: see ``mean``.
    :param providers: onnxruntime execution providers; default CUDA when ``device`` is CUDA
        and onnxruntime has it, else CPU.
    :param threads: onnxruntime intra-op threads; default ``torch.get_num_threads()``.
    :raises UsageError: onnxruntime is missing, the file is missing or not a loadable ONNX
        model, or its inputs/outputs are not those of an image classifier.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        output: str | None = None,
        batch_size: int = 64,
        scores: str = "auto",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        name: str = "target",
        role: str = "target",
        device: torch.device | str = "cpu",
    ):
        where = f"model {str(path)!r}"
        if scores not in SCORE_READINGS:
            raise ValueError(f"scores must be one of {SCORE_READINGS}, got {scores!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ort = import_onnxruntime(where)
        file = Path(path).expanduser()
        if not file.is_file():
            raise UsageError(f"{where}: no such file; expected an ONNX model file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        device = torch.device(device)
        if providers is None:
            available = ort.get_available_providers()
            providers = ["CPUExecutionProvider"]
            if device.type == "cuda" and "CUDAExecutionProvider" in available:
                providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(file), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise UsageError(f"{where}: onnxruntime cannot load it: {first_line(exc)}") from exc

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            listed = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise UsageError(f"{where}: the graph has {len(inputs)} inputs ({listed}); expected one image input [B,3,H,W]")
        graph_input = inputs[0]
        if graph_input.type not in _INPUT_DTYPES:
            raise UsageError(f"{where}: input {graph_input.name!r} is {graph_input.type}; expected tensor(float), tensor(float16) or tensor(double)")
        shape = list(graph_input.shape)
        if len(shape) != 4:
            raise UsageError(f"{where}: input {graph_input.name!r} has shape {shape}; expected rank 4, [B,3,H,W] or [B,H,W,3]")
        if shape[1] == 3 or (not isinstance(shape[1], int) and shape[3] != 3):
            self.channels_last, height, width = False, shape[2], shape[3]
        elif shape[3] == 3:
            self.channels_last, height, width = True, shape[1], shape[2]
        else:
            raise UsageError(f"{where}: input {graph_input.name!r} has shape {shape}; expected 3 colour channels (NCHW or NHWC)")
        self.input_name = graph_input.name
        self.input_dtype = _INPUT_DTYPES[graph_input.type]
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

        outputs = {o.name: o for o in self.session.get_outputs()}
        if output is not None and output not in outputs:
            raise UsageError(f"{where}: the graph has no output {output!r}; outputs: {', '.join(outputs)}")
        graph_output = outputs[output] if output is not None else self.session.get_outputs()[0]
        self.output_name = graph_output.name
        out_shape = list(graph_output.shape)
        if graph_output.type in _LABEL_DTYPES:
            returns = "labels"
        elif graph_output.type in _INPUT_DTYPES:
            returns = "scores"
            if len(out_shape) != 2:
                raise UsageError(f"{where}: output {graph_output.name!r} has shape {out_shape}; expected scores [B,K]")
        else:
            raise UsageError(f"{where}: output {graph_output.name!r} is {graph_output.type}; expected float scores [B,K] or integer labels [B]")

        super().__init__(
            self._predict, returns=returns, name=name, role=role, spec=str(path), device=device,
            description=f"ONNX model {file.name} via onnxruntime ({', '.join(self.session.get_providers())})",
        )
        if returns == "scores" and isinstance(out_shape[1], int):
            self.num_classes = out_shape[1]
        if isinstance(height, int) and isinstance(width, int):
            self.input_size = (3, height, width)
        self.path = file
        self.batch_size = self.fixed_batch or int(batch_size)
        self.scores_are = scores
        self._mean = None if mean is None else np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self._std = None if std is None else np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(images.shape[1:]) != tuple(self.input_size):
            raise TargetError(f"{self.name}: the ONNX graph takes images of shape {list(self.input_size)}, got {list(images.shape[1:])}")
        array = images.detach().to("cpu", torch.float32).numpy()
        if self._mean is not None:
            array = array - self._mean
        if self._std is not None:
            array = array / self._std
        if self.channels_last:
            array = array.transpose(0, 2, 3, 1)
        array = np.ascontiguousarray(array, dtype=self.input_dtype)
        outputs = [self._run(array[start : start + self.batch_size]) for start in range(0, array.shape[0], self.batch_size)]
        if not outputs:
            return torch.empty((0, self.num_classes or 0) if self.returns == "scores" else (0,), device=self.device)
        out = np.concatenate(outputs)
        if self.returns == "labels":
            return torch.from_numpy(out.reshape(out.shape[0], -1)[:, 0].astype(np.int64)).to(self.device)
        if not np.isfinite(out).all():
            raise TargetError(f"{self.name}: the ONNX graph produced NaN or infinite scores; expected finite numbers")
        return scores_to_probabilities(torch.from_numpy(out.astype(np.float32)), self.scores_are).to(self.device)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        n = chunk.shape[0]
        if self.fixed_batch is not None and n < self.fixed_batch:
            # A graph exported with a fixed batch size accepts nothing else: pad with copies.
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, axis=0)])
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: chunk})
        except Exception as exc:  # onnxruntime's pybind errors (invalid argument, shape mismatch)
            raise TargetError(f"{self.name}: onnxruntime failed on a batch of shape {list(chunk.shape)}: {first_line(exc)}") from exc
        if out.shape[0] != chunk.shape[0]:
            raise TargetError(f"{self.name}: the ONNX graph answered {out.shape[0]} rows for {chunk.shape[0]} images")
        return out[:n]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["onnx"] = {"input": self.input_name, "output": self.output_name, "providers": self.session.get_providers(), "channels_last": self.channels_last}
        return out


def owns(spec: str) -> bool:
    """True for a path ending in ``.onnx`` (options after ``#`` aside)."""
    return spec.partition("#")[0].lower().endswith(".onnx") and not is_http_spec(spec)


def load(spec: str, options: ModelOptions) -> ONNXTarget:
    """The ``auditkit_load_model`` answer for ``*.onnx`` specs: ``PATH.onnx[#option=value&...]``
    with the options of :data:`ONNX_OPTIONS`; ``--mean``/``--std`` normalize before the graph.

    :raises UsageError: onnxruntime is missing (naming ``pip install auditkit[onnx]``), or
        the file, an option or the graph is not usable.
    """
    path, opts = split_options(spec, ONNX_OPTIONS)
    refuse_weights(spec, options, "an ONNX file")
    target = ONNXTarget(
        path, mean=getattr(options, "mean", None), std=getattr(options, "std", None), device=getattr(options, "device", "cpu"), **opts
    )
    target.spec = spec
    if target.fixed_batch is not None and "batch_size" in opts and opts["batch_size"] != target.fixed_batch:
        warnings.warn(f"model {spec!r}: the graph's batch size is fixed at {target.fixed_batch}; #batch_size={opts['batch_size']} is ignored", stacklevel=2)
    return target



auditkit_load_model = model_format(owns, load)
