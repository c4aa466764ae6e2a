"""The white-box checks' attacks: perturbation budgets and their metric labels, attack
configurations, batched FGSM/PGD runs with restarts (built by :mod:`auditkit.attacks`), the
unbounded attack, and minimal-epsilon search."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from auditkit.toolkit import (  # noqa: F401  (NORMS, budget_label, parse_budget re-exported for this plugin)
    NORMS,
    CleanPoint,
    Cost,
    LogitsModule,
    budget_label,
    craft,
    fgsm_step,
    missing_input_gradient,
    oom_backoff,
    parse_budget,
)

from auditkit_whitebox.gradients import pgd_linf_first_step

METHODS = ("fgsm", "pgd")
TARGETED_MODES = ("random", "least_likely")

# The unbounded attack's Linf step sizes, one stage each: 1/8 crosses the pixel range in eight
# steps, and each stage halves the step down to 1/128 (2/255), fine enough to settle into a
# thin adversarial region that sign steps of 1/4 jump across and back.
UNBOUNDED_STEP_SIZES = (1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128)

def max_budget(norm: str, image_shape: tuple[int, ...]) -> float:
    """The largest meaningful budget for images in [0,1]: 1 for Linf (any pixel to any value),
    the diagonal of the unit cube for L2."""
    return 1.0 if norm == "linf" else math.sqrt(math.prod(image_shape))


@dataclass(frozen=True)
class AttackSpec:
    """One attack configuration.

    ``fgsm`` is one signed-gradient step of size eps for Linf (Goodfellow et al. 2015) and one
    normalized-gradient step of length eps for L2 (the fast gradient method). ``pgd`` is
    projected gradient descent (Madry et al. 2018) with ``steps`` steps of size
    ``rel_step_size * eps``, from a uniformly random point of the ball when
    ``random_start``, restarted ``restarts`` times on the images not yet fooled.
    """

    method: str
    norm: str
    steps: int = 1
    rel_step_size: float = 0.25
    random_start: bool = False
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown attack {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {', '.join(NORMS)}")
        if self.steps < 1 or self.restarts < 1 or not self.rel_step_size > 0:
            raise ValueError(f"steps and restarts must be >= 1 and rel_step_size > 0, got {self}")

    def describe(self) -> str:
        norm = "Linf" if self.norm == "linf" else "L2"
        if self.method == "fgsm":
            return f"FGSM {norm}"
        start = "random start" if self.random_start else "clean start"
        restarts = f", {self.restarts} restarts" if self.restarts > 1 else ""
        return f"PGD {norm} ({self.steps} steps of {self.rel_step_size:g}*eps, {start}{restarts})"

    def deterministic(self) -> "AttackSpec":
        """The same attack from the clean image, without restarts: what a bisection over
        epsilon needs, since per-image budgets rule out torchattacks' random start."""
        return AttackSpec(self.method, self.norm, self.steps, self.rel_step_size, False, 1)


@dataclass
class AttackOutcome:
    """What one attack did to a batch: ``success`` bool [B] (untargeted: prediction differs
    from the label; targeted: prediction equals the target), the ``adversarial`` images, and
    the model's ``logits`` on them."""

    success: torch.Tensor
    adversarial: torch.Tensor
    logits: torch.Tensor


def perturb(
    module: LogitsModule,
    spec: AttackSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float | torch.Tensor,
    *,
    targeted: bool = False,
    clean_point: CleanPoint | None = None,
) -> torch.Tensor:
    """One run of ``spec`` on ``module`` by :func:`auditkit.attacks.craft`; returns the
    adversarial images [B,3,H,W], contiguous, checked against the budget.

    ``labels`` are the true classes (untargeted: maximize the loss) or the target classes
    (``targeted``: minimize the loss towards them). ``eps`` is one budget for the batch or a
    tensor [B] of per-image budgets (then without random start: torchattacks draws its start
    with a scalar radius). PGD's step size is this plugin's rule, ``rel_step_size * eps``
    (per image with per-image budgets).

    ``clean_point``: PGD without random start only, the known clean logits and gradient of
    this loss target on these images (:class:`~auditkit.toolkit.CleanPoint`), which
    torchattacks' first step then reads instead of a pass.

    :raises ValueError: per-image budgets with ``random_start``.
    :raises RuntimeError: a perturbation outside its budget or the [0,1] box.
    """
    if spec.method == "fgsm":
        return craft(module, images, labels, "fgsm", spec.norm, eps, targeted=targeted)
    return craft(
        module, images, labels, spec.method, spec.norm, eps, steps=spec.steps, alpha=eps * spec.rel_step_size,
        random_start=spec.random_start, targeted=targeted, clean_point=clean_point,
    )


def run_attack(
    module: LogitsModule,
    spec: AttackSpec,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float | torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    gradient: torch.Tensor | None = None,
    clean_point: CleanPoint | None = None,
) -> AttackOutcome:
    """Attack a batch with ``spec`` and score the result with one extra forward pass.

    Untargeted when ``targets`` is None (success: the prediction leaves ``labels``), targeted
    otherwise (success: the prediction becomes ``targets``; a target equal to the label never
    counts, since that would be success without any misclassification). Restarts attack only
    the images not yet fooled, and an image counts as fooled when any restart fooled it. Batches halve on
    CUDA out-of-memory. Every perturbation is checked against its budget and the [0,1] box
    (:func:`perturb`), since a budget overrun would silently overstate the attack's success.

    ``gradient``, FGSM only: the clean-point gradient [B,3,H,W] of this loss target on these
    images (:func:`auditkit.toolkit.clean_gradient`); the step is then taken along
    it (:func:`auditkit.toolkit.fgsm_step`, bit-identical to torchattacks' and
    within the budget by construction) and costs one forward pass, no backward.

    ``clean_point``, PGD without random start only: the clean logits and gradient of this loss
    target on these images (:class:`~auditkit.toolkit.CleanPoint`); torchattacks' first step
    reads them, which saves one forward+backward pass per image.
    """
    if gradient is not None and spec.method != "fgsm":
        raise ValueError(f"a precomputed gradient makes an FGSM step, not {spec.describe()}")
    if clean_point is not None and (spec.method != "pgd" or spec.random_start):
        raise ValueError(f"a known clean point serves PGD from the clean images, not {spec.describe()}")
    goal = labels if targets is None else targets
    per_image = isinstance(eps, torch.Tensor)
    success = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    adversarial = images.clone()
    logits: torch.Tensor | None = None
    restarts = spec.restarts if spec.random_start else 1
    for _ in range(restarts):
        todo = (~success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break

        def attack_and_score(x: torch.Tensor, g: torch.Tensor, *more: torch.Tensor) -> tuple[torch.Tensor, ...]:
            budget = more[-1] if per_image else eps
            if gradient is not None:
                adv = fgsm_step(x, more[0], spec.norm, budget)
            else:
                point = CleanPoint(more[0], more[1], more[2]) if clean_point is not None else None
                adv = perturb(module, spec, x, g, budget, targeted=targets is not None, clean_point=point)
            with torch.no_grad():
                return adv, module(adv)

        extra: tuple[torch.Tensor, ...] = ()
        if gradient is not None:
            extra = (gradient[todo],)
        elif clean_point is not None:
            extra = (clean_point.logits[todo], clean_point.gradient[todo], clean_point.sizes()[todo])
        extra += (eps[todo],) if per_image else ()
        adv, out = oom_backoff(attack_and_score, images[todo], goal[todo], *extra)
        if logits is None:
            logits = torch.empty(images.shape[0], out.shape[1], dtype=out.dtype, device=out.device)
        pred = out.argmax(1)
        hit = pred != labels[todo]
        if targets is not None:
            hit &= pred == targets[todo]
        adversarial[todo] = adv
        logits[todo] = out
        success[todo] = hit
    assert logits is not None
    return AttackOutcome(success, adversarial, logits)


def times(cost: Cost, k: int) -> Cost:
    """``cost`` made ``k`` times (the note once)."""
    return cost.times(k)


def attack_cost(spec: AttackSpec, n_images: int, *, gradient_known: bool = False) -> Cost:
    """The most image passes :func:`run_attack` makes attacking ``n_images`` images with
    ``spec``: per restart, torchattacks' ``spec.steps`` forward+backward passes per image (FGSM:
    one) and one scoring forward pass. With ``gradient_known`` (the clean-point gradient given:
    FGSM steps along it, PGD from the clean image reads it for its first step) one
    forward+backward pass fewer per image: FGSM costs the scoring pass only. Exact with one
    restart (or no random start); each restart after the first attacks only the images no
    restart has fooled yet, so with more restarts this counts every image surviving every
    restart."""
    if gradient_known:
        if spec.random_start:
            raise ValueError(f"{spec.describe()} starts at a random point, not at the clean-point gradient")
        return Cost(forward=n_images, gradient=(spec.steps - 1) * n_images)
    restarts = spec.restarts if spec.random_start else 1
    return Cost(forward=restarts * n_images, gradient=restarts * spec.steps * n_images, maximum=restarts > 1)


def unbounded_attack(
    module: LogitsModule,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    step_sizes: tuple[float, ...] = UNBOUNDED_STEP_SIZES,
    *,
    first_gradient: torch.Tensor | None = None,
) -> AttackOutcome:
    """An untargeted attack whose budget reaches any image: Linf PGD at eps = 1 from the clean
    image, with a step size that decays stage by stage.

    ``steps`` sign steps are shared out evenly over the stages of ``step_sizes`` (absolute
    step sizes, largest first; with fewer steps than stages, the first ``steps`` stages get one
    each). Each stage is torchattacks' PGD started from where the previous stage left each
    image, on the images no stage has fooled yet: the Linf ball of radius 1 around any image
    holds the whole [0,1] box, so restarting the projection there loses nothing. Starting
    from the clean image, not a random point, keeps success down to the gradients: noise of
    that size would be a random image, whose misclassification says nothing about them.

    Constant steps cannot do this job: steps of 1/4 saturate pixels at 0 or 1 within a few
    steps and then oscillate across any adversarial region narrower than a step, so an
    ordinary model keeps images that a smaller step reaches. An image counts as fooled when
    any stage fooled it; ``adversarial`` holds that stage's image, or the last stage's for
    images never fooled.

    ``first_gradient``: the untargeted clean-point gradient of these images as torchattacks
    computes it on this batch (:func:`auditkit.toolkit.clean_gradient`), when it is
    already known: the first step is then taken along it, in torchattacks' arithmetic, and
    torchattacks goes on from there (the same restart of the projection as between stages).
    """
    stages = step_sizes[: max(1, min(steps, len(step_sizes)))]
    share, extra = divmod(steps, len(stages))
    success = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    adversarial = images.clone()
    logits: torch.Tensor | None = None
    for i, alpha in enumerate(stages):
        todo = (~success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        start, stage_steps = adversarial[todo], share + (i < extra)
        if i == 0 and first_gradient is not None:
            start, stage_steps = pgd_linf_first_step(start, first_gradient, alpha, 1.0), stage_steps - 1
        if stage_steps:
            spec = AttackSpec("pgd", "linf", stage_steps, alpha, False, 1)
            out = run_attack(module, spec, start, labels[todo], 1.0)
        else:
            out = score(module, start, labels[todo])
        if logits is None:
            logits = torch.empty(images.shape[0], out.logits.shape[1], dtype=out.logits.dtype, device=images.device)
        adversarial[todo] = out.adversarial
        logits[todo] = out.logits
        success[todo] = out.success
    assert logits is not None
    return AttackOutcome(success, adversarial, logits)


def unbounded_attack_cost(
    n_images: int,
    steps: int,
    step_sizes: tuple[float, ...] = UNBOUNDED_STEP_SIZES,
    *,
    first_gradient_known: bool = False,
) -> Cost:
    """The most image passes :func:`unbounded_attack` makes on ``n_images`` images: each stage's
    sign steps (one forward+backward pass each) and one scoring forward pass per image, the
    first stage one step fewer with ``first_gradient_known``. Exact for the first stage, which
    attacks every image; each later stage attacks only the images no stage has fooled yet, so
    this counts every image surviving every stage."""
    stages = step_sizes[: max(1, min(steps, len(step_sizes)))]
    share, extra = divmod(steps, len(stages))
    gradient = 0
    for i in range(len(stages)):
        gradient += share + (i < extra) - (i == 0 and first_gradient_known)
    return Cost(forward=len(stages) * n_images, gradient=gradient * n_images, maximum=len(stages) > 1)


def score(module: LogitsModule, adversarial: torch.Tensor, labels: torch.Tensor) -> AttackOutcome:
    """The untargeted outcome of given adversarial images: one forward pass."""
    with torch.no_grad():
        logits = oom_backoff(module, adversarial)
    return AttackOutcome(logits.argmax(1) != labels, adversarial, logits)


# An attack at per-image budgets on some of the attacked images: (rows, eps) -> success bool
# [len(rows)], rows long positions among the attacked images, eps one budget or a tensor [len(rows)].
BudgetAttack = Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor]


def minimal_epsilon(
    attack: BudgetAttack,
    grid: list[float],
    broken: torch.Tensor,
    *,
    bisection_steps: int,
    cap: float,
    median_only: bool = True,
) -> torch.Tensor:
    """The smallest budget at which an attack fools each image, by bisection over epsilon.

    ``broken`` [n, len(grid)] says which of the n attacked images the attack already fooled at
    each budget of the increasing ``grid``; the first success brackets the answer between the
    grid point before it (or 0) and that one. Images never fooled on the grid are probed at
    doubling budgets up to ``cap``. Each bracket is then halved ``bisection_steps`` times with
    ``attack``, the deterministic attack at per-image budgets. The result [n] is, per image,
    the smallest budget at which an attack was seen to succeed (an upper bound on the true
    minimum), ``inf`` where none did.

    ``median_only``: search only where the answer can move the median of the result, which is
    all the checks report. Before each round, an image whose bracket lies wholly at or below
    the bracket of the median's order statistics (its upper end <= the lower bound of the
    ``(n-1)//2``-th smallest answer), or wholly above them (its lower end >= the upper bound of
    the ``n//2``-th), stops where it is: its entry stays a budget at which the attack succeeded
    (or ``inf``), on its side of the median, so the median equals that of the full search
    (each image's own bisection is unchanged; only images that cannot matter are skipped).
    """
    n = broken.shape[0]
    device = broken.device
    grid_t = torch.tensor(grid, dtype=torch.float32, device=device)
    found = broken.any(1)
    first = broken.float().argmax(1)
    hi = torch.where(found, grid_t[first], torch.full_like(grid_t[first], math.inf))
    lo = torch.where(found & (first > 0), grid_t[(first - 1).clamp(min=0)], torch.zeros_like(hi))
    lo = torch.where(found, lo, grid_t[-1].expand_as(lo))

    def searched() -> torch.Tensor:
        if not median_only or n == 0:
            return torch.ones(n, dtype=torch.bool, device=device)
        below = lo.sort().values[(n - 1) // 2]
        above = hi.sort().values[n // 2]
        return (hi > below) & (lo < above)

    probe = grid[-1]
    while probe < cap:
        todo = ((~torch.isfinite(hi)) & searched()).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        probe = min(2 * probe, cap)
        success = attack(todo, probe)
        hi[todo[success]] = probe
        lo[todo[~success]] = probe
    for _ in range(bisection_steps):
        todo = (torch.isfinite(hi) & searched()).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        mid = (lo[todo] + hi[todo]) / 2
        success = attack(todo, mid)
        hi[todo] = torch.where(success, mid, hi[todo])
        lo[todo] = torch.where(success, lo[todo], mid)
    return hi


def minimal_epsilon_rounds(grid: list[float], cap: float, bisection_steps: int) -> int:
    """The most rounds of attacks :func:`minimal_epsilon` runs with these arguments: one per
    doubling of the probe budget from ``grid[-1]`` up to ``cap``, then ``bisection_steps``. Each
    round attacks every image at most once, and fewer when images are fooled earlier or cannot
    move the median, so ``rounds x images`` bounds the images it attacks."""
    rounds, probe = 0, grid[-1]
    while probe < cap:
        probe = min(2 * probe, cap)
        rounds += 1
    return rounds + bisection_steps


def input_gradient(target: Any, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The gradient of the summed cross-entropy with respect to the input pixels [B,3,H,W].

    Summed, not averaged, so that a tiny gradient is not divided by the batch size into an
    exact zero. Only the input is differentiated: no ``.grad`` lands on the model's parameters.
    """
    x = images.detach().clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(target(x).float(), labels, reduction="sum")
    if not loss.requires_grad:
        raise missing_input_gradient(target)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def random_wrong_class(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A class drawn uniformly among the ``num_classes - 1`` classes other than each label."""
    draw = torch.randint(0, num_classes - 1, labels.shape, generator=generator).to(labels.device)
    return draw + (draw >= labels).long()


def least_likely_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The class with the lowest clean logit among those other than each label (Kurakin et
    al. 2017's hardest target). Ties go to the lowest class index, so a model whose logits tie
    (a constant model) gets a deterministic target that is never the label itself."""
    masked = logits.float().scatter(1, labels.view(-1, 1).to(logits.device), math.inf)
    return masked.argmin(1)
