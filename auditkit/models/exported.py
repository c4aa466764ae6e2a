"""Model format: a ``.pt2`` torch.export archive, unflattened so layers can be hooked when the
program allows it; shape-specialised programs run through :class:`ExportedProgramModule`."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch import nn

from auditkit.errors import UsageError
from auditkit.models.format import ModelOptions, first_line, make_target, model_format, refuse_weights
from auditkit.models.torch_files import kind_name, model_file, torch_error_text
from auditkit.target import Target

KIND = "export"


def owns(spec: str) -> bool:
    return model_file(spec, KIND) is not None


class ExportedProgramModule(nn.Module):
    """A torch.export program as an auditable module.

    An exported program is specialised to its example input's shapes and has its train/eval
    behaviour fixed at export; its module refuses ``.train()``/``.eval()`` and fails its shape
    guards with ``AssertionError``. This wrapper accepts ``.eval()`` as a no-op, reports guard
    failures as ``RuntimeError`` (what :class:`~auditkit.target.Target` expects of a model
    rejecting an input) and, when the batch size was fixed at export, runs any batch in chunks
    of that size, padding the last one by repeating its final image.
    """

    def __init__(self, program: nn.Module, batch_size: int | None = None):
        super().__init__()
        self.program = program
        self.batch_size = batch_size

    def train(self, mode: bool = True) -> "ExportedProgramModule":
        self.training = mode  # the program's own mode was fixed at export
        return self

    def _run(self, x: torch.Tensor) -> Any:
        try:
            return self.program(x)
        except AssertionError as exc:  # shape guards of ExportedProgram.module()
            raise RuntimeError(str(exc)) from exc

    def forward(self, x: torch.Tensor) -> Any:
        n = self.batch_size
        if n is None or x.shape[0] == n:
            return self._run(x)
        outputs = []
        for chunk in x.split(n):
            k = chunk.shape[0]
            if k < n:
                chunk = torch.cat([chunk, chunk[-1:].expand(n - k, *chunk.shape[1:])])
            outputs.append(_first_rows(self._run(chunk), k))
        return _concat_rows(outputs)


def _first_rows(output: Any, k: int) -> Any:
    """``output`` (a tensor, or a tuple, list or dict of them) with each tensor's batch cut to ``k``."""
    if isinstance(output, torch.Tensor):
        return output[:k] if output.ndim else output
    if isinstance(output, Mapping):
        return {key: _first_rows(v, k) for key, v in output.items()}
    if isinstance(output, (tuple, list)):
        parts = [_first_rows(v, k) for v in output]
        return type(output)(*parts) if hasattr(output, "_fields") else type(output)(parts)
    return output


def _concat_rows(outputs: list[Any]) -> Any:
    """The chunks' outputs joined along the batch, keeping their structure (so the Target
    chooses the logits among several outputs as it would for one run)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs) if first.ndim else first
    if isinstance(first, Mapping):
        return {key: _concat_rows([o[key] for o in outputs]) for key in first}
    if isinstance(first, (tuple, list)):
        parts = [_concat_rows([o[i] for o in outputs]) for i in range(len(first))]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    return first


# torch.export logs a failed deserialization as a long traceback before raising its own vaguer
# error ("check the warnings above"): held back while loading, the cause is quoted instead.
_TORCH_EXPORT_LOGGERS = ("torch.export", "torch._export")


@contextlib.contextmanager
def _held_back_logs(names: tuple[str, ...]) -> Iterator[list[logging.LogRecord]]:
    """Hold back what the loggers ``names`` (and their children) log in the block, yielding
    the records: logged as usual after the block succeeds, dropped when it raises (whoever
    catches that says in one line what failed)."""
    held = logging.handlers.BufferingHandler(capacity=1000)
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [held], False
    try:
        yield held.buffer
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
    for record in held.buffer:
        logging.getLogger(record.name).handle(record)


def load(spec: str, options: ModelOptions) -> Target:
    refuse_weights(spec, options, f"a {kind_name(KIND)}")
    path = model_file(spec, KIND)
    with _held_back_logs(_TORCH_EXPORT_LOGGERS) as logged:
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            causes = [r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1] is not None]
            if causes:
                detail = torch_error_text(causes[-1])
            elif "warnings above" in str(exc):  # and there were none: nothing in it was a program
                detail = "no exported program found in it"
            else:
                detail = torch_error_text(exc)
            raise UsageError(
                f"model {spec!r}: not loadable as a torch.export archive ({detail}); is it damaged, or saved by a "
                f"torch other than this {torch.__version__}?"
            ) from exc
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise UsageError(
            f"model {spec!r}: the exported program takes {len(user_inputs)} inputs {user_inputs}; expected one "
            "image batch [B, 3, H, W]"
        )
    example, shape = _exported_example(program, user_inputs[0])
    if example is None or example.ndim != 4:
        shown = None if example is None else list(example.shape)
        raise UsageError(
            f"model {spec!r}: the exported program's input has shape {shown}; expected images [B, 3, H, W]"
        )
    # Exported programs are shape-specialised unless exported with dynamic_shapes; a dimension
    # left dynamic shows up as a SymInt in the input's recorded shape.
    static = [isinstance(s, int) for s in shape] if shape is not None else [True] * 4
    fixed_batch = int(example.shape[0]) if static[0] else None
    input_size = tuple(int(s) for s in example.shape[1:])

    notes = [f"input {list(input_size)}" + (" fixed at export" if all(static[1:]) else " as exported, H/W dynamic")]
    training_ops = _training_mode_ops(program)
    if training_ops:
        notes.append(f"exported in training mode: {' and '.join(training_ops)} as in training")
        warnings.warn(
            f"model {spec!r} was exported in training mode: its {' and '.join(training_ops)} cannot be switched "
            f"to eval behaviour; export after model.eval()",
            stacklevel=2,
        )
    else:
        notes.append("eval mode fixed at export")

    # unflatten() rebuilds the module hierarchy, so forward hooks fire per layer; the flat
    # ExportedProgram.module() has named submodules that its graph never calls.
    module: nn.Module | None = None
    layers_fired = 0
    gradient_ok = False
    with contextlib.suppress(Exception), _held_back_logs(_TORCH_EXPORT_LOGGERS):
        unflattened = torch.export.unflatten(program)
        layers_fired, gradient_ok = _exercise(unflattened, example)
        module = unflattened
    if module is None:
        module = program.module()
        try:
            _, gradient_ok = _exercise(module, example)
        except Exception as exc:
            raise UsageError(
                f"model {spec!r}: the exported program fails on its own example input: {type(exc).__name__}: "
                f"{first_line(exc)}"
            ) from exc

    hookable = layers_fired > 0 and fixed_batch is None
    if fixed_batch is not None:
        module = ExportedProgramModule(module, batch_size=fixed_batch)
        notes.append(
            f"batch size fixed at {fixed_batch}, run in chunks; no layer hooks (export with a dynamic batch "
            "dimension for them)"
        )
    elif not hookable:
        module = ExportedProgramModule(module)
        notes.append("no layer hooks")
    if not gradient_ok:
        notes.append("no input gradients")
        warnings.warn(
            f"model {spec!r}: no gradient reaches the input through the exported program; white-box checks will fail",
            stacklevel=2,
        )
    description = f"torch.export program {path.name} ({'; '.join(notes)})"
    return make_target(module, spec, options, input_size=input_size, hookable=hookable, description=description)


def _exported_example(program: Any, input_name: str) -> tuple[torch.Tensor | None, tuple | None]:
    """The program's example input (or a random one of its recorded shape), and that recorded
    shape: ints where the program is specialised, SymInts where a dimension is dynamic."""
    value = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == input_name:
            value = node.meta.get("val")
            break
    shape = tuple(value.shape) if isinstance(getattr(value, "shape", None), (torch.Size, tuple)) else None
    example_inputs = getattr(program, "example_inputs", None)
    if example_inputs and example_inputs[0] and isinstance(example_inputs[0][0], torch.Tensor):
        return example_inputs[0][0].detach().clone(), shape
    if shape is None:
        return None, None
    dims = [int(s) if isinstance(s, int) else (getattr(s.node, "hint", None) or 2) for s in shape]
    return torch.rand(dims, dtype=getattr(value, "dtype", torch.float32)), shape


def _training_mode_ops(program: Any) -> list[str]:
    found = set()
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        args = list(node.args)
        if "dropout" in target and (True in args[1:] or node.kwargs.get("train") is True):
            found.add("dropout")
        elif "batch_norm" in target and "no_training" not in target:
            index = 3 if "no_stats" in target else 5
            if (len(args) > index and args[index] is True) or node.kwargs.get("training") is True:
                found.add("batch norm")
    return sorted(found)


def _exercise(module: nn.Module, example: torch.Tensor) -> tuple[int, bool]:
    """Run ``module`` once on ``example`` with forward hooks on every submodule; return how many
    submodules fired with a tensor output, and whether a finite gradient reached the input."""
    fired: set[str] = set()
    handles = []

    def recorder(name: str) -> Callable:
        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                fired.add(name)

        return hook

    x = example.detach().clone()
    differentiable = x.is_floating_point()
    if differentiable:
        x.requires_grad_(True)
    try:
        for name, sub in module.named_modules():
            if name:
                with contextlib.suppress(RuntimeError, NotImplementedError, AttributeError):
                    handles.append(sub.register_forward_hook(recorder(name)))
        # A program exported in training mode draws dropout masks: keep the caller's RNG as is.
        grad = None
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            # Every floating output counts: which of several outputs are the logits is the Target's call.
            outputs = [t for t in _tensors_in(module(x)) if t.is_floating_point() and t.requires_grad]
            if differentiable and outputs:
                # autograd.grad, not backward(): leave the parameters' .grad untouched.
                total = sum(t.float().sum() for t in outputs)
                (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    gradient_ok = grad is not None and bool(torch.isfinite(grad).all())
    return len(fired), gradient_ok


def _tensors_in(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _tensors_in(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in _tensors_in(v)]
    return [v for v in vars(output).values() if isinstance(v, torch.Tensor)] if hasattr(output, "__dict__") else []



auditkit_load_model = model_format(owns, load)
