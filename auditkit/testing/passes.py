"""Counting the image passes an audit makes through a model, per check: what a test of a
check's :meth:`~auditkit.Check.estimate` compares it with, and how a test shows that work is
shared instead of repeated.

    counter = PassCounter(model)
    run = auditkit.audit(model, data, baselines=[], plugins=[counter], ...)
    counter.forward["gradcam.faithfulness"], counter.gradient["gradcam.faithfulness"]

An image is counted when it enters the model's first module that holds parameters (the stem:
every pass goes through it, wherever it stops), as a *gradient* pass when autograd is
recording (a backward follows: an attack step, a Grad-CAM map, an inversion step) and as a
*forward* pass otherwise. Passes through copies of the model (``copy.deepcopy`` keeps the
hook: ``gradcam.randomization``'s randomized copies) are counted too; passes outside any
check (the clean forward pass, the layer probe) are counted under None.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from auditkit.markers import hookimpl


def first_parameterized_module(model: nn.Module) -> nn.Module:
    """The first module (in registration order) that holds parameters of its own: the stem,
    which every image entering ``model`` goes through. ValueError when ``model`` has none."""
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            return module
    raise ValueError(f"{type(model).__name__} holds no parameters: no module to count passes at")


class CurrentCheck:
    """A plugin (``plugins=[...]``) that knows which check is running: :attr:`check` is its id
    while its ``run`` runs, None between checks. The base of counters that attribute work to
    checks."""

    check: str | None = None

    @hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any) -> Any:
        self.check = check.id
        try:
            return (yield)
        finally:
            self.check = None


class PassCounter(CurrentCheck):
    """Counts images through ``model`` per check; register it as a plugin of the audit
    (``plugins=[counter]``). :attr:`forward` and :attr:`gradient` are ``Counter`` s keyed by
    check id (None: outside every check). :meth:`close` removes the hook."""

    def __init__(self, model: nn.Module):
        self.module = first_parameterized_module(model)
        self.forward: Counter[str | None] = Counter()
        self.gradient: Counter[str | None] = Counter()
        self._handle = self.module.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0] if inputs else None
        n = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else 1
        (self.gradient if torch.is_grad_enabled() else self.forward)[self.check] += n

    def __deepcopy__(self, memo: dict) -> "PassCounter":
        # a deep copy of the model copies its hook, and with it this counter: keep one counter,
        # so that passes through the copies are counted with the rest
        return self

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "PassCounter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
