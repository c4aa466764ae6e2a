"""Feature inversion (Mahendran & Vedaldi 2015): the objective's terms, the forward that reads
several layers at once from one stacked batch, and the projected optimization of the pixels."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "drop", "stacked", "sequential")


# -- the objective's terms ---------------------------------------------------------------------


def feature_rel_err_sq(features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 per image, [B] (the objective's data term).

    Where phi(x0) is all zeros (a dead layer) the denominator is floored at 1e-12 per
    element, so matching zeros with zeros costs nothing instead of dividing by zero."""
    diff = (features - reference).flatten(1).pow(2).sum(1)
    norm = reference.flatten(1).pow(2).sum(1)
    floor = 1e-12 * reference[0].numel()
    return diff / norm.clamp_min(floor)


def total_variation(x: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """TV_beta(x) = mean over channels and pixels (i,j) of
    ((x[i,j+1] - x[i,j])^2 + (x[i+1,j] - x[i,j])^2)^(beta/2), per image, [B].

    Mahendran & Vedaldi's R_V^beta, averaged instead of summed so that its weight does not
    depend on the image size. For beta < 2 a tiny epsilon inside the power keeps the gradient
    finite at flat regions and is subtracted again, so a constant image has TV exactly 0."""
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    sq = dx.pow(2) + dy.pow(2)
    if beta >= 2.0:
        return sq.pow(beta / 2).flatten(1).mean(1)
    eps = torch.tensor(1e-12, dtype=sq.dtype, device=sq.device)
    return ((sq + eps).pow(beta / 2) - eps.pow(beta / 2)).flatten(1).mean(1)


def alpha_norm(x: torch.Tensor, alpha: float = 6.0) -> torch.Tensor:
    """||x - 0.5||_alpha^alpha, averaged over channels and pixels, per image, [B].

    Mahendran & Vedaldi apply it to the mean-subtracted image; in [0,1] pixel space that is
    the image centred on mid-grey. A large alpha makes it a soft box: negligible inside, steep
    near the bounds, pulling pixels the features do not constrain towards grey."""
    return (x - 0.5).abs().pow(alpha).flatten(1).mean(1)


@dataclass(frozen=True)
class Objective:
    """x* = argmin_x ||phi_l(x) - phi_l(x0)||^2 / ||phi_l(x0)||^2 + lambda_tv TV_beta(x)
    + lambda_alpha ||x - 0.5||_alpha^alpha, per image and layer (see the terms' functions)."""

    lambda_tv: float
    beta: float
    lambda_alpha: float
    alpha: float

    def __call__(self, x: torch.Tensor, features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The objective per image, [B]."""
        loss = feature_rel_err_sq(features, reference)
        if self.lambda_tv:
            loss = loss + self.lambda_tv * total_variation(x, self.beta)
        if self.lambda_alpha:
            loss = loss + self.lambda_alpha * alpha_norm(x, self.alpha)
        return loss


# -- reading layers from a stacked batch -----------------------------------------------------------


class StopForward(BaseException):
    """Raised by the hook of the deepest layer needed, so that nothing after it runs.

    A BaseException, like KeyboardInterrupt, so that a model's own ``except Exception``
    around its forward cannot swallow it."""


class LayerTaps:
    """Forward hooks on the layers to invert that read each layer's output from one forward.

    The input is layer-major: ``block`` images for the first layer (in call order), then
    ``block`` for the second, and so on. With ``mode``:

    * ``"drop"``: each layer takes the first ``block`` rows of its output and hands only the
      rest on, so the copies meant for shallow layers stop costing anything once read. Only
      valid where the selected layers are cut points of the network (everything downstream
      depends on them alone); :func:`batching_is_exact` verifies it.
    * ``"stacked"``: every copy runs to the deepest layer; each layer reads its own block.
      Valid for any layers, but costs the deepest layer's compute for every copy.
    * ``"shared"``: every layer reads all rows (one copy of each image serves all layers; used
      for the reference features phi_l(x0)).

    In every mode the forward stops at the deepest layer (:class:`StopForward`). Use it as a
    context manager: hooks exist only inside the ``with`` block.
    """

    def __init__(self, target: Any, layers: Sequence[str], block: int, mode: str):
        if mode not in ("drop", "stacked", "shared"):
            raise ValueError(f"mode must be 'drop', 'stacked' or 'shared', got {mode!r}")
        self.target = target
        self.layers = list(layers)
        self.block = block
        self.mode = mode
        self._store: dict[int, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._rows = 0  # rows the next selected layer must output (the batch, less what was dropped)

    def __enter__(self) -> "LayerTaps":
        try:
            for i, name in enumerate(self.layers):
                self._handles.append(self.target.layer(name).register_forward_hook(self._hook(i)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, i: int) -> Callable[..., Any]:
        last = i == len(self.layers) - 1
        block = self.block

        def hook(module: Any, inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {self.layers[i]!r} returned {type(output).__name__}; expected a tensor")
            if i in self._store:
                raise ValueError(f"layer {self.layers[i]!r} ran twice in one forward; expected a module that runs once")
            if output.ndim == 0 or output.shape[0] != self._rows:
                raise ValueError(
                    f"layer {self.layers[i]!r} output has shape {list(output.shape)} for a batch of {self._rows} "
                    "images; expected the batch along the first dimension"
                )
            if self.mode == "shared":
                rows = output
            elif self.mode == "stacked":
                rows = output[i * block : (i + 1) * block]
            else:
                rows = output[:block]
            # A copy: a later in-place op (ReLU(inplace=True)) must not change what was read.
            self._store[i] = rows.clone()
            if last:
                raise StopForward
            if self.mode == "drop":
                self._rows -= block
                return output[block:]
            return None

        return hook

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Run the target on ``images`` (pixel space) and return each layer's rows, in order."""
        if not self._handles:
            raise RuntimeError("LayerTaps must be used inside its with block")
        self._store = {}
        self._rows = images.shape[0]
        try:
            self.target(images)
        except StopForward:
            pass
        else:
            raise RuntimeError(f"the forward finished without reaching layer {self.layers[-1]!r}")
        missing = [name for i, name in enumerate(self.layers) if i not in self._store]
        if missing:
            raise RuntimeError(f"layers {missing} did not run before {self.layers[-1]!r}; expected them earlier in call order")
        out = [self._store[i] for i in range(len(self.layers))]
        self._store = {}
        return out


def stack_layer_major(per_layer: Sequence[torch.Tensor]) -> torch.Tensor:
    """[L] tensors of [B,...] -> [L*B,...], the layout :class:`LayerTaps` reads."""
    return torch.cat(list(per_layer), dim=0)


@dataclass
class BatchingComparison:
    """What one forward of the stacked copies read, against each layer's copies run alone.

    :ivar reason: None when every layer read the same features both ways (within 1e-4 of the
        largest magnitude), else why batching is not exact here.
    :ivar alone: [L] tensors [B,...]: each layer's features of its own copies, run alone.
    :ivar batched: [L] tensors [B,...]: the same read from the stacked forward; None when that
        forward broke.
    """

    reason: str | None
    alone: list[torch.Tensor]
    batched: list[torch.Tensor] | None


@torch.no_grad()
def compare_batching(target: Any, layers: Sequence[str], inputs: torch.Tensor, mode: str = "drop") -> BatchingComparison:
    """Run each layer's copies on their own, then all of them stacked in one forward (``mode``
    ``drop`` or ``stacked``, see :class:`LayerTaps`), and compare what each layer read.

    ``inputs`` is [L,B,3,H,W], distinct images per layer (the random starts), so that layers
    mixing batch rows are caught as well as residual connections and branches around a
    selected layer. Costs 2*L*B image passes without gradients; both sets of features are
    kept, so that the caller need not run them again (:func:`invert` reads its starts' errors
    from them)."""
    b = inputs.shape[1]
    alone = []
    for name, x in zip(layers, inputs):
        with LayerTaps(target, [name], b, "shared") as taps:
            alone.append(taps(x)[0])
    try:
        with LayerTaps(target, layers, b, mode) as taps:
            got = taps(stack_layer_major(list(inputs)))
    except Exception as exc:  # whatever breaks, this batching is not usable here
        what = "dropping rows after each layer" if mode == "drop" else "stacking copies"
        return BatchingComparison(f"{what} breaks the forward ({str(exc).splitlines()[0]})", alone, None)
    for name, g, r in zip(layers, got, alone):
        if g.shape != r.shape:
            return BatchingComparison(f"batched, {name} has shape {list(g.shape)} instead of {list(r.shape)}", alone, got)
        scale = float(r.abs().max()) or 1.0
        if float((g - r).abs().max()) > 1e-4 * scale:
            return BatchingComparison(f"batched, {name}'s output differs from running its copies alone", alone, got)
    return BatchingComparison(None, alone, got)


def batching_is_exact(target: Any, layers: Sequence[str], inputs: torch.Tensor, mode: str = "drop") -> str | None:
    """Whether one forward of the stacked copies (``mode`` ``drop`` or ``stacked``) reads the
    same features as running each layer's copies on their own (see :func:`compare_batching`).
    Returns None when every layer agrees, else the reason it does not."""
    return compare_batching(target, layers, inputs, mode).reason


# -- the optimization ------------------------------------------------------------------------------


@dataclass
class Inversion:
    """Reconstructions and how well they matched the features.

    :ivar images: [L,B,3,H,W] the reconstructions x*, layer by layer (call order), in [0,1].
    :ivar feature_rel_err: [L,B] ||phi_l(x*) - phi_l(x0)|| / ||phi_l(x0)|| (not squared).
    :ivar start_rel_err: [L,B] the same for the random start, for reference.
    :ivar strategy: the strategy that ran (``auto`` resolved).
    """

    images: torch.Tensor
    feature_rel_err: torch.Tensor
    start_rel_err: torch.Tensor
    strategy: str
    note: str = ""


def invert(
    target: Any,
    images: torch.Tensor,
    layers: Sequence[str],
    start: torch.Tensor,
    objective: Objective,
    *,
    steps: int,
    lr: float,
    strategy: str = "auto",
    progress: Callable[[Iterable, int, str], Iterable] | None = None,
) -> Inversion:
    """Reconstruct ``images`` from each layer's output, batched over images (and layers).

    Adam on the pixels (betas 0.9, 0.999), with a cosine-decaying learning rate from ``lr``
    to 0 over ``steps`` and projection onto [0,1] after every step. Gradients are taken with respect to the
    pixels only (``torch.autograd.grad``): the model's parameters get no ``.grad``.

    :param target: a white-box ``auditkit.Target`` in eval mode (pixel-space input).
    :param images: x0, float [B,3,H,W] in [0,1] on the target's device.
    :param layers: module names, in call order.
    :param start: [L,B,3,H,W] initial images, one per (layer, image), in [0,1].
    :param strategy: ``drop``, ``stacked``, ``sequential`` or ``auto`` (``drop`` where it is
        exact, see :func:`compare_batching`; ``sequential`` otherwise). ``drop`` and
        ``stacked`` raise ValueError where they are not exact. Every strategy gives the
        same result up to floating point: each copy's loss depends on its own pixels only.
    :param progress: wraps the step loop: ``progress(iterable, total, desc)``.

    Image passes through ``target`` (each counted where it enters the network), without
    gradients: B for the reference features, 2*L*B for the batching check (``auto``,
    ``drop`` and ``stacked`` with L > 1), whose features also give the starts' errors, else
    L*B for those errors, and L*B for the final errors; with gradients, ``steps`` * L * B.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n_layers, b = len(layers), images.shape[0]
    if tuple(start.shape) != (n_layers, *images.shape):
        raise ValueError(f"start must be [layers={n_layers}, *images.shape={list(images.shape)}], got {list(start.shape)}")
    # Projected onto the box once, in one layout: the batching check then runs the very
    # tensors the optimization starts from, and its features serve as the starts' own.
    start = start.clamp(0, 1).contiguous()
    with torch.no_grad(), LayerTaps(target, layers, b, "shared") as taps:
        reference = [r.detach() for r in taps(images)]
    note = ""
    # phi_l(start) per layer, as the optimization would read it first (same forward, same
    # batch, no gradients), when the batching check has already read it: not run again.
    start_features: list[torch.Tensor] | None = None
    if strategy in ("auto", "drop", "stacked") and n_layers > 1:
        comparison = compare_batching(target, layers, start, "drop" if strategy == "auto" else strategy)
        reason = comparison.reason
        if strategy != "auto" and reason is not None:
            raise ValueError(f"strategy {strategy!r} cannot invert {list(layers)} exactly: {reason}; use 'auto' or 'sequential'")
        if strategy == "auto":
            strategy = "drop" if reason is None else "sequential"
        if reason is not None:
            note = f"layers inverted one after another: {reason}"
            log.info("inversion.fidelity: %s", note)
        # sequential reads each layer's copies alone, as the check's first forwards did
        start_features = comparison.alone if strategy == "sequential" else comparison.batched
    elif strategy == "auto":
        strategy = "drop"  # one layer: nothing to drop or stack, every strategy is the same forward
    if strategy == "sequential":
        parts = [
            _optimize(
                target, [name], [reference[i]], start[i], objective, steps, lr, "stacked", progress, f"inversion {name}",
                start_features=None if start_features is None else [start_features[i]],
            )
            for i, name in enumerate(layers)
        ]
        recon = torch.stack([p[0] for p in parts])
        final = torch.stack([p[1][0] for p in parts])
        initial = torch.stack([p[2][0] for p in parts])
    else:
        x, final_l, initial_l = _optimize(
            target, layers, reference, start.reshape(n_layers * b, *images.shape[1:]), objective, steps, lr,
            strategy, progress, "inversion", start_features=start_features,
        )
        recon = x.view(n_layers, *images.shape)
        final, initial = torch.stack(final_l), torch.stack(initial_l)
    return Inversion(recon, final.sqrt(), initial.sqrt(), strategy, note)


def _optimize(
    target: Any,
    layers: Sequence[str],
    reference: Sequence[torch.Tensor],
    start: torch.Tensor,
    objective: Objective,
    steps: int,
    lr: float,
    mode: str,
    progress: Callable[[Iterable, int, str], Iterable] | None,
    desc: str,
    *,
    start_features: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Adam on the pixels from ``start``; returns (x*, the final and the initial squared
    feature errors per layer). ``start_features``: phi_l(start) per layer as ``taps`` in
    ``mode`` reads it, already computed (by the batching check); None runs that forward."""
    b = reference[0].shape[0]
    x = start.detach().clone().clamp_(0, 1).requires_grad_(True)
    # Adam (Kingma & Ba 2015) written out: torch.optim's first step imports torch._dynamo,
    # which costs seconds, more than a whole inversion of a small model.
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    step_iter: Iterable[int] = range(steps)
    if progress is not None:
        step_iter = progress(step_iter, steps, desc)
    with LayerTaps(target, layers, b, mode) as taps:
        initial = _rel_err_sq(taps, x, reference, start_features)
        for step in step_iter:
            with torch.enable_grad():
                features = taps(x)
                loss = sum(
                    objective(x[i * b : (i + 1) * b], f, r).sum() for i, (f, r) in enumerate(zip(features, reference))
                )
                (grad,) = torch.autograd.grad(loss, [x])
            with torch.no_grad():
                t = step + 1
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                rate = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))  # cosine decay to 0
                denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
                x.addcdiv_(m, denom, value=-rate / (1 - beta1**t))
                x.clamp_(0, 1)  # projection onto the box [0,1]
        final = _rel_err_sq(taps, x, reference)
    return x.detach(), final, initial


@torch.no_grad()
def _rel_err_sq(
    taps: LayerTaps, x: torch.Tensor, reference: Sequence[torch.Tensor], features: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    return [feature_rel_err_sq(f, r) for f, r in zip(taps(x) if features is None else features, reference)]
