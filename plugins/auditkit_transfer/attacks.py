"""Adversarial examples crafted on the proxy with torchattacks (FGSM, PGD, MI-FGSM; Linf and
L2; untargeted and targeted), the random-noise control, metric names and Wilson intervals."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from auditkit.toolkit import (
    NORMS,
    CleanPoint,
    LogitsModule,
    budget_label,
    clean_gradient_and_logits,
    fgsm_step,
)
from auditkit.toolkit import craft as craft_attack

ATTACKS = ("fgsm", "pgd", "mifgsm")
MODES = ("untargeted", "targeted")
# The attacks whose first step is along the proxy's gradient at the clean image: in one mode,
# on one batch, they all take the same gradient. FGSM is that step; MI-FGSM's loop is
# torchattacks' own, and its first pass reads the gradient (auditkit.toolkit.CleanPoint).
FROM_CLEAN = ("fgsm", "mifgsm")

# Reuse of work across attacks: the clean-point gradient of the proxy is computed once per
# batch and mode; FGSM (every budget and norm) steps from it and MI-FGSM's first step reads
# it, bit for bit as torchattacks would. False crafts every attack through torchattacks from
# scratch, as before; the equality tests switch it off.
REUSE = True


@dataclass(frozen=True)
class AttackConfig:
    """One attack at one budget: ``attack`` in :data:`ATTACKS`, ``norm`` in :data:`NORMS`,
    ``eps`` the radius in pixel space ([0, 1] images)."""

    attack: str
    norm: str
    eps: float

    @property
    def key(self) -> str:
        """The metric suffix, e.g. ``pgd_linf_8/255`` or ``fgsm_l2_0.5``."""
        return f"{self.attack}_{threat_key(self.norm, self.eps)}"


def threat_key(norm: str, eps: float) -> str:
    """``linf_8/255`` or ``l2_0.5``: the budget format every check uses in metric names."""
    return budget_label(norm, eps)


def supported(attack: str, norm: str) -> bool:
    """MI-FGSM (Dong et al. 2018) is defined for Linf only; FGSM and PGD exist for both norms."""
    return not (attack == "mifgsm" and norm == "l2")


def craft(
    proxy: nn.Module, config: AttackConfig, images: torch.Tensor, labels: torch.Tensor, *, steps: int, targeted: bool,
    clean_point: CleanPoint | None = None,
) -> torch.Tensor:
    """Adversarial images crafted on ``proxy`` by :func:`auditkit.toolkit.craft`: away from
    ``labels`` (untargeted) or toward them (targeted), within the config's ball around
    ``images`` [B,3,H,W] (any memory layout) and inside [0, 1]; the result is contiguous.

    This check's step sizes: PGD takes Madry et al.'s 2.5 * eps / steps from a random start
    (the steps can cross the ball and back); MI-FGSM takes eps / steps from the clean image
    with decay 1.0 (Dong et al.); FGSM is one step of size eps from the clean image, in L2 the
    fast gradient method.

    :param clean_point: the proxy's logits and gradient at ``images`` towards ``labels`` in
        this mode (:func:`clean_point` of this very batch), or None. FGSM then steps along it
        (:func:`auditkit.toolkit.fgsm_step`) and MI-FGSM's first step reads it instead of
        computing it again; the result is the same bit for bit. PGD, from a random start,
        ignores it.
    :raises ValueError: an attack without a form in the config's norm (MI-FGSM under L2).
    """
    eps = float(config.eps)
    if clean_point is not None and config.attack == "fgsm":
        return fgsm_step(images, clean_point.gradient, config.norm, eps).contiguous()
    if config.attack == "pgd":
        return craft_attack(proxy, images, labels, "pgd", config.norm, eps, steps=steps, alpha=2.5 * eps / steps,
                             random_start=True, targeted=targeted)
    if config.attack == "mifgsm":
        return craft_attack(proxy, images, labels, "mifgsm", config.norm, eps, steps=steps, alpha=eps / steps,
                             decay=1.0, targeted=targeted, clean_point=clean_point)
    return craft_attack(proxy, images, labels, config.attack, config.norm, eps, targeted=targeted)


def clean_point(proxy: nn.Module, images: torch.Tensor, goal: torch.Tensor, *, targeted: bool) -> CleanPoint:
    """The proxy's gradient [B,3,H,W] that FGSM steps along on this batch (and MI-FGSM's first
    step takes), as torchattacks computes it, with the logits [B,K] of its pass
    (:func:`auditkit.toolkit.clean_gradient_and_logits` on the proxy wrapped in
    :class:`~auditkit.toolkit.LogitsModule`, in eval mode, then handed back in the mode it was
    in): of the batch-mean cross-entropy towards ``goal``, maximized (untargeted) or minimized
    (``targeted``). One forward+backward pass of the proxy per image."""
    module = LogitsModule(proxy)
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            gradient, logits = clean_gradient_and_logits(module, images, goal, targeted=targeted)
    finally:
        module.train(was_training)
    return CleanPoint(logits, gradient, len(images))


def random_noise(images: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The control: ``images`` plus random noise of the attack's size, clipped to [0, 1]. Linf:
    a random corner of the ball (each pixel +-eps, the largest Linf noise); L2: a uniformly
    random direction of length eps."""
    shape = images.shape
    if norm == "linf":
        signs = torch.randint(0, 2, shape, generator=generator).to(images) * 2 - 1
        noise = eps * signs
    elif norm == "l2":
        direction = torch.randn(shape, generator=generator).to(images)
        norms = direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (len(shape) - 1)))
        noise = eps * direction / norms
    else:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return (images + noise).clamp(0.0, 1.0)


def random_other_class(reference: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each reference class, a class drawn uniformly from the other ``num_classes - 1``
    (the target of a targeted attack); references outside the classes get any class."""
    draw = torch.randint(0, max(num_classes - 1, 1), tuple(reference.shape), generator=generator).to(reference)
    return torch.where(reference < num_classes, draw + (draw >= reference).long(), draw % num_classes)


class TransferMeasurement:
    """Crafts adversarial examples on ``proxy`` and replays them on the target through
    ``oracle`` (a callable returning ``(probs or None, labels)``), batch by batch, keeping only
    counts, so memory does not grow with the number of images.

    :attr:`counts` maps ``(family, key)`` to ``[successes on the target, successes on the
    proxy, images]``, with family ``transfer_success`` (untargeted: the target's answer
    leaves the reference class), ``targeted_success`` (the target answers the wanted class,
    which must differ from the reference: a wanted class equal to it never counts) and
    ``noise_success`` (random noise of the same size moves the answer; key without the
    attack name).

    Per image, each (attack, mode) costs one query and one forward of the proxy to score its
    example, and each noise budget one query. The proxy's gradient passes: ``steps`` for PGD;
    with :data:`REUSE`, one clean-point gradient per mode shared by every FGSM (which takes no
    other) and MI-FGSM (``steps - 1`` more); without it, 1 per FGSM and ``steps`` per MI-FGSM.
    """

    def __init__(
        self,
        proxy: nn.Module,
        oracle: Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]],
        configs: Sequence[AttackConfig],
        *,
        modes: Sequence[str] = MODES,
        steps: int = 5,
        noise: Sequence[tuple[str, float]] = (),
        generator: torch.Generator | None = None,
    ):
        self.proxy = proxy
        self.oracle = oracle
        self.configs = list(configs)
        self.modes = tuple(modes)
        self.steps = steps
        self.noise = list(noise)
        self.generator = generator
        self.counts: dict[tuple[str, str], list[int]] = {}
        self.n_images = 0

    def add(self, images: torch.Tensor, reference: torch.Tensor, wanted: torch.Tensor | None = None) -> None:
        """Attack one batch: ``reference`` is the target's (correct) answer for each image,
        ``wanted`` the class each targeted attack aims for (required for targeted mode)."""
        n = int(images.shape[0])
        if n == 0:
            return
        self.n_images += n
        points: dict[str, CleanPoint] = {}  # per mode: the proxy's clean-point gradient on this batch
        for config in self.configs:
            for mode in self.modes:
                targeted = mode == "targeted"
                if targeted and wanted is None:
                    raise ValueError("targeted mode needs the wanted classes")
                goal = wanted if targeted else reference
                point = None
                if REUSE and config.attack in FROM_CLEAN:
                    if mode not in points:
                        points[mode] = clean_point(self.proxy, images, goal, targeted=targeted)
                    point = points[mode]
                adv = craft(self.proxy, config, images, goal, steps=self.steps, targeted=targeted, clean_point=point)
                with torch.no_grad():
                    on_proxy = self.proxy(adv).argmax(1)
                _, answers = self.oracle(adv)
                if targeted:
                    moved = goal != reference
                    hits, proxy_hits = (answers == goal) & moved, (on_proxy == goal) & moved
                else:
                    hits, proxy_hits = answers != goal, on_proxy != goal
                family = "targeted_success" if targeted else "transfer_success"
                self._tally((family, config.key), int(hits.sum()), int(proxy_hits.sum()), n)
        for norm, eps in self.noise:
            _, answers = self.oracle(random_noise(images, norm, eps, self.generator))
            self._tally(("noise_success", threat_key(norm, eps)), int((answers != reference).sum()), 0, n)

    def rate(self, family: str, key: str) -> float:
        """Successes on the target / images for one entry of :attr:`counts`."""
        hits, _, n = self.counts[(family, key)]
        return hits / n

    def _tally(self, key: tuple[str, str], hits: int, proxy_hits: int, n: int) -> None:
        entry = self.counts.setdefault(key, [0, 0, 0])
        entry[0] += hits
        entry[1] += proxy_hits
        entry[2] += n
