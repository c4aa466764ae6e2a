"""Checks ``whitebox.fgsm`` and ``whitebox.pgd``: robust accuracy against epsilon under Linf and
L2 budgets, untargeted and targeted, with confidence intervals and minimal-epsilon estimates."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from auditkit import Artifact, Check, Cost, Findings, Threshold, UsageError
from auditkit.toolkit import AuditContext, Batch, CleanPoint, Curve, LogitsModule, wilson_interval

from auditkit_whitebox import gradients
from auditkit_whitebox.artifacts import accuracy_curve, example_strip
from auditkit_whitebox.attacks import (
    NORMS,
    TARGETED_MODES,
    AttackSpec,
    attack_cost,
    budget_label,
    least_likely_class,
    max_budget,
    minimal_epsilon,
    minimal_epsilon_rounds,
    random_wrong_class,
    run_attack,
    times,
)

LINF_EPS: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
L2_EPS: tuple[float, ...] = (0.25, 0.5, 1.0)

_NORM_NAMES = {"linf": "Linf", "l2": "L2"}

def median(values: list[float]) -> float:
    """The median (mean of the two middle values for an even count); ``inf`` when more than
    half are ``inf``, ``nan`` when there are none."""
    if not values:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.median(np.asarray(values, dtype=np.float64)))


def _validate_budgets(check_id: str, name: str, values: tuple[float, ...], upper: float | None) -> tuple[float, ...]:
    for v in values:
        if not (math.isfinite(v) and v > 0) or (upper is not None and v > upper):
            bound = f"(0, {upper:g}]" if upper is not None else "> 0"
            raise UsageError(f'[tool.auditkit.checks."{check_id}"] {name}: every epsilon must be {bound}, got {v!r}')
    return tuple(sorted(set(values)))


@dataclass
class FGSMSettings:
    """Settings of ``whitebox.fgsm``.

    :ivar linf_eps: Linf budgets in [0,1] pixel units (8/255 ~ 0.0314); the defaults span one
        to eight grey levels of an 8-bit image, the range used for CIFAR/ImageNet evaluations.
    :ivar l2_eps: L2 budgets in [0,1] pixel units.
    :ivar targeted: targeted variants to run besides the untargeted attack: ``random`` (a wrong
        class drawn per image) and ``least_likely`` (the wrong class with the lowest clean logit,
        the lowest index among ties).
    :ivar targeted_budgets: ``largest`` runs the targeted variants at the largest budget of each
        norm only (the curve is the untargeted one; this halves the cost of a default audit),
        ``all`` at every budget.
    :ivar bisection_steps: halvings of each image's epsilon bracket when searching the smallest
        budget that fools it (4 gives 1/16 of the grid spacing; 0 keeps the grid's resolution).
        Only images whose bracket can still hold the median are searched, since the median is
        what is reported; it comes out as if every image had been.
    :ivar min_eps_search_factor: images the grid does not fool are probed at doubling budgets up
        to this multiple of the largest budget (4: two doublings, 32/255 for the default Linf
        grid); an image still not fooled counts as ``inf``, so a model that is robust beyond
        the grid reports ``median_min_eps = inf`` rather than spending the audit searching.
    :ivar examples: adversarial examples kept as PNG artifacts.
    """

    check_id: ClassVar[str] = "whitebox.fgsm"
    linf_eps: tuple[float, ...] = LINF_EPS
    l2_eps: tuple[float, ...] = L2_EPS
    targeted: tuple[str, ...] = TARGETED_MODES
    targeted_budgets: Literal["largest", "all"] = "largest"
    bisection_steps: int = 4
    min_eps_search_factor: float = 4.0
    examples: int = 4

    def __post_init__(self) -> None:
        where = f'[tool.auditkit.checks."{self.check_id}"]'
        self.linf_eps = _validate_budgets(self.check_id, "linf_eps", tuple(self.linf_eps), 1.0)
        self.l2_eps = _validate_budgets(self.check_id, "l2_eps", tuple(self.l2_eps), None)
        if not self.linf_eps and not self.l2_eps:
            raise UsageError(f"{where}: linf_eps and l2_eps are both empty; expected at least one budget")
        unknown = [m for m in self.targeted if m not in TARGETED_MODES]
        if unknown:
            raise UsageError(
                f"{where} targeted: unknown mode(s) {unknown}; expected a subset of {list(TARGETED_MODES)}"
            )
        self.targeted = tuple(dict.fromkeys(self.targeted))
        if not (math.isfinite(self.min_eps_search_factor) and self.min_eps_search_factor >= 1):
            raise UsageError(f"{where} min_eps_search_factor: must be >= 1, got {self.min_eps_search_factor!r}")
        if self.bisection_steps < 0 or self.examples < 0:
            raise UsageError(
                f"{where}: bisection_steps and examples must be >= 0, got {self.bisection_steps}, {self.examples}"
            )


@dataclass
class PGDSettings(FGSMSettings):
    """Settings of ``whitebox.pgd``: those of ``whitebox.fgsm`` plus the PGD schedule.

    :ivar steps: gradient steps per run (10: the cost of a full audit stays seconds on a tiny
        model; raise it for a final evaluation, and let ``whitebox.masking`` tell you whether
        the result still moves).
    :ivar rel_step_size: step size as a fraction of eps; 0.25 (2/255 at 8/255, the usual
        CIFAR-10 choice) lets the 10 default steps cross the ball and back (2.5 eps, Madry et
        al.'s rule), and more steps then also mean a longer reach.
    :ivar restarts: random restarts; an image counts as fooled when any restart fools it.
    :ivar random_start: start from a uniformly random point of the ball.
    """

    check_id: ClassVar[str] = "whitebox.pgd"
    steps: int = 10
    rel_step_size: float = 0.25
    restarts: int = 1
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f'[tool.auditkit.checks."{self.check_id}"]'
        if self.steps < 1 or self.restarts < 1:
            raise UsageError(
                f"{where}: steps and restarts must be >= 1, got steps={self.steps}, restarts={self.restarts}"
            )
        if not (math.isfinite(self.rel_step_size) and self.rel_step_size > 0):
            raise UsageError(f"{where} rel_step_size: must be > 0, got {self.rel_step_size!r}")


class _RobustAccuracy(Check):
    """Shared algorithm of ``whitebox.fgsm`` and ``whitebox.pgd``; subclasses choose the attack.

    Only the correctly classified images are attacked; the others count as not robust.
    Metrics, with ``<budget>`` as ``linf_8/255`` or ``l2_0.5`` (see ``budget_label``):
    ``clean_acc``; per budget ``robust_acc@<budget>`` (share of all images still correct) and
    its 95% Wilson interval ``robust_acc_lo@<budget>``/``robust_acc_hi@<budget>``,
    ``attack_success@<budget>`` (share of the correctly classified images fooled) and
    ``targeted_success_<mode>@<budget>`` (share driven to the target class, which is never the
    label; at the largest budget of each norm unless ``targeted_budgets = "all"``);
    ``attack_success`` at the largest Linf budget (largest L2 one without Linf budgets);
    ``median_min_eps`` / ``median_min_eps_l2``, the median over correctly classified images of
    the smallest budget that fools each, by bisection (``minimal_epsilon``; ``inf`` when more
    than half resist every budget); ``rises_with_eps``.

    Pass/fail: robust accuracy is reported, not gated. An undefended model has near-zero
    robust accuracy at a few grey levels, which is information rather than a defect; a bar
    relative to a classic baseline (``{min = 0.5, baseline = "resnet18"}``) can be configured
    but cannot be a default, since audits may run with ``--baselines none``. The default
    verdict is on whether the curve can be trusted: ``rises_with_eps <= 0``, the
    number of consecutive budgets (same norm) where robust accuracy at the larger budget is
    above the 95% upper bound at the smaller one. Every perturbation allowed at the smaller
    budget is allowed at the larger one, so such a rise means the attack is failing (Carlini
    et al. 2019). Set your own bar with a threshold on any metric, e.g.
    ``thresholds = {"robust_acc@linf_2/255" = {min = 0.3}}``.
    """

    requires = ("white_box", "labels")
    headline = ("clean_acc", "robust_acc@linf_8/255", "median_min_eps")
    # Every name these checks may report; reported_metrics narrows "@*" to the configured budgets.
    metrics = (
        "clean_acc", "n_images", "n_attacked", "attack_success", "rises_with_eps", "median_min_eps",
        "median_min_eps_l2", "robust_acc@*", "robust_acc_lo@*", "robust_acc_hi@*", "attack_success@*",
        *(f"targeted_success_{mode}@*" for mode in TARGETED_MODES),
    )
    directions = {
        "clean_acc": "higher",
        "robust_acc*": "higher",  # with its interval's bounds
        "attack_success*": "lower",
        "targeted_success_*": "lower",
        "median_min_eps*": "higher",
        "rises_with_eps": "lower",
        "n_*": None,
    }
    thresholds = (Threshold("rises_with_eps", "max", 0),)
    # Only correctly classified images are attacked; the rates come with 95% Wilson intervals,
    # which can exclude 1/2 only from 4 images on (z^2 / (n + z^2) < 1/2 -> n > 3.84).
    min_sample = 4
    sample_metric = "n_attacked"
    # Nothing changes a constant output: robust accuracy then measures the constant, not robustness.
    constant_sensitive = True

    @classmethod
    def reported_metrics(cls, settings: FGSMSettings) -> tuple[str, ...]:
        names = ["clean_acc", "n_images", "n_attacked", "attack_success", "rises_with_eps"]
        for norm, grid in (("linf", settings.linf_eps), ("l2", settings.l2_eps)):
            if not grid:
                continue
            names.append(_min_eps_metric(norm))
            targeted = grid if settings.targeted_budgets == "all" else grid[-1:]
            for eps in grid:
                label = budget_label(norm, eps)
                names += [f"{family}@{label}" for family in ("robust_acc", "robust_acc_lo", "robust_acc_hi", "attack_success")]
                if eps in targeted:
                    names += [f"targeted_success_{mode}@{label}" for mode in settings.targeted]
        return tuple(names)

    def attack_spec(self, norm: str) -> AttackSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def clean_gradients(
        self, ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor,
        labels: torch.Tensor, targets: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The clean-point gradients this check's attacks step along, by loss target
        (``"untargeted"`` or a targeted mode); empty for attacks that take their own."""
        return {}

    def clean_point(
        self, ctx: AuditContext, module: LogitsModule, spec: AttackSpec, index: torch.Tensor, images: torch.Tensor,
        labels: torch.Tensor,
    ) -> CleanPoint | None:
        """The shared untargeted clean logits and gradient of ``images`` (eval positions
        ``index``, true classes ``labels``) for an untargeted run of ``spec`` whose first step
        reads them (PGD from the clean image), or None when the attack takes its own."""
        return None

    def record_untargeted(
        self, ctx: AuditContext, norm: str, eps: float, index: torch.Tensor, success: torch.Tensor
    ) -> None:
        """Called with each untargeted run's ``success`` (bool [B]) on the images at eval
        positions ``index``; a check whose outcomes another check reads keeps them here."""

    def search_cost(self, ctx: AuditContext, spec: AttackSpec, n_images: int) -> Cost:
        """The most passes one minimal-epsilon round costs on ``n_images`` images attacked with
        ``spec`` (the deterministic attack, from the clean image). With :data:`gradients.REUSE`
        each run reads its images' kept clean-point gradients (FGSM steps along them; PGD's
        first step reads them): none is computed unless the store cannot keep every attacked
        image's row, and then at most one per image and round."""
        if not gradients.REUSE:
            return attack_cost(spec, n_images)
        clean = ctx.clean
        kept = gradients.fits_in_store(n_images, tuple(ctx.data.image_shape), clean.num_classes)
        return attack_cost(spec, n_images, gradient_known=True) + Cost(gradient=0 if kept else n_images)

    def grid_cost(self, ctx: AuditContext, spec: AttackSpec, n_images: int) -> Cost:
        """The most passes one run of ``spec`` at one budget costs on ``n_images`` attacked
        images, besides the clean-point gradients (:meth:`clean_gradient_cost`): one
        forward+backward pass fewer per image when the run starts at the clean image and
        reads its gradient."""
        return attack_cost(spec, n_images, gradient_known=gradients.REUSE and not spec.random_start)

    def clean_gradient_cost(self, ctx: AuditContext, positions: list[torch.Tensor], modes: tuple[str, ...]) -> Cost:
        """What :meth:`clean_gradients` costs over the batches of attacked images at eval
        positions ``positions`` (one tensor per batch), in the attack modes ``modes``."""
        return Cost()

    def _attack_plan(self, num_classes: int) -> tuple[dict[str, list[float]], tuple[str, ...], dict[str, list[float]]]:
        """The budgets by norm, the attack modes, and the budgets of the targeted runs by norm."""
        s = self.settings
        budgets = {norm: list(s.linf_eps if norm == "linf" else s.l2_eps) for norm in NORMS}
        budgets = {norm: eps for norm, eps in budgets.items() if eps}
        modes = ("untargeted", *(s.targeted if num_classes > 1 else ()))
        targeted_grid = {
            norm: grid if s.targeted_budgets == "all" else grid[-1:] for norm, grid in budgets.items()
        }
        return budgets, modes, targeted_grid

    def estimate(self, ctx: AuditContext) -> Cost:
        """The attacks on the grid, exactly (with one restart); the minimal-epsilon search at
        most: every attacked image in every round (``minimal_epsilon_rounds``), where it stops
        early for images fooled sooner or that cannot move the median."""
        s = self.settings
        clean = ctx.clean
        correct = clean.correct
        n_correct = int(correct.sum())
        budgets, modes, targeted_grid = self._attack_plan(clean.num_classes)
        positions = attacked_positions(ctx, correct)
        cost = self.clean_gradient_cost(ctx, positions, modes)
        for norm, grid in budgets.items():
            spec = self.attack_spec(norm)
            runs = len(grid) + (len(modes) - 1) * len(targeted_grid[norm])
            cost += times(self.grid_cost(ctx, spec, n_correct), runs)
            cap = min(max_budget(norm, tuple(ctx.data.image_shape)), s.min_eps_search_factor * grid[-1])
            rounds = minimal_epsilon_rounds(grid, cap, s.bisection_steps)
            if rounds:  # the search stops early for images fooled sooner: its count is a maximum
                cost += dataclasses.replace(times(self.search_cost(ctx, spec.deterministic(), n_correct), rounds), maximum=True)
        return cost

    def run(self, ctx: AuditContext) -> Findings:
        s = self.settings
        clean = ctx.clean
        correct = clean.correct
        n_images, n_correct = len(clean), int(correct.sum())
        num_classes = clean.num_classes
        budgets, modes, targeted_grid = self._attack_plan(num_classes)
        fooled = {("untargeted", norm, eps): 0 for norm, grid in budgets.items() for eps in grid}
        for mode in modes[1:]:
            fooled.update({(mode, norm, eps): 0 for norm, grid in targeted_grid.items() for eps in grid})
        # per eval position, written batch by batch (no small tensor kept per batch: on the CPU
        # those pinned the C heap, which then grew with the number of batches): whether it was
        # attacked here, and its outcome at each budget of the grid
        attacked = torch.zeros(n_images, dtype=torch.bool, device=ctx.device)
        broken = {norm: torch.zeros(n_images, len(grid), dtype=torch.bool, device=ctx.device)
                  for norm, grid in budgets.items()}
        module = LogitsModule(ctx.target)
        example_norm = next(iter(budgets))
        image_shape: tuple[int, ...] = (3, 1, 1)  # of the attacked images, once there are any

        desc = self.attack_spec(example_norm).method.upper()
        batch_examples: list[tuple[int, list[Artifact]]] = []  # by the batch's first position

        def attack_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes (its images, gradients, adversarial
            # examples) is freed when it returns, not kept by the loop's variables through
            # the next batch's attacks.
            nonlocal image_shape
            examples = [a for _, part in batch_examples for a in part]  # this process's so far
            keep = correct[batch.index]
            if not bool(keep.any()):
                return
            images, labels, index = batch.images[keep], batch.labels[keep], batch.index[keep]
            attacked[index.to(ctx.device)] = True
            image_shape = tuple(images.shape[1:])
            clean_logits = clean.logits_at(batch.index)[keep].float()
            targets = {}
            if "random" in modes:
                targets["random"] = random_wrong_class(labels, num_classes, ctx.generator)
            if "least_likely" in modes:
                targets["least_likely"] = least_likely_class(clean_logits, labels)
            grads = self.clean_gradients(ctx, module, index, images, labels, targets)
            for norm, grid in budgets.items():
                spec = self.attack_spec(norm)
                hits, adversarial, adv_logits = [], [], []
                point = self.clean_point(ctx, module, spec, index, images, labels)
                for eps in grid:
                    out = run_attack(
                        module, spec, images, labels, eps, gradient=grads.get("untargeted"), clean_point=point
                    )
                    success = out.success
                    if norm == example_norm and len(examples) < s.examples:
                        adversarial.append(out.adversarial)
                        adv_logits.append(out.logits)
                    del out  # its adversarial images, before the next attack makes its own
                    self.record_untargeted(ctx, norm, eps, index, success)
                    fooled[("untargeted", norm, eps)] += int(success.sum())
                    hits.append(success)
                    for mode in modes[1:] if eps in targeted_grid[norm] else ():
                        fooled[(mode, norm, eps)] += int(run_attack(
                            module, spec, images, labels, eps, targets=targets[mode], gradient=grads.get(mode)
                        ).success.sum())
                del point
                broken_here = torch.stack(hits, 1)
                broken[norm][index.to(ctx.device)] = broken_here.to(ctx.device)
                if adversarial:
                    found_here = self._examples(
                        ctx, spec, norm, grid, images, labels, clean_logits, broken_here, adversarial,
                        adv_logits, s.examples - len(examples),
                    )
                    batch_examples.append((int(batch.index[0]), found_here))
                    examples = examples + found_here

        for batch in ctx.progress(ctx.batches(), total=ctx.n_batches(), desc=desc):
            attack_batch(batch)

        # Every process's batches (one process: its own), in evaluation order: the counts
        # summed, the attacked images' grid outcomes gathered, the first examples kept (each
        # process kept its own first ones, which hold every one of the first overall).
        world = ctx.world
        keys = list(fooled)
        counts = world.all_sum(torch.tensor([fooled[k] for k in keys], dtype=torch.long))
        fooled = dict(zip(keys, (int(c) for c in counts.tolist())))
        positions = attacked.nonzero().view(-1)  # increasing: the batches' order, as one process makes them
        n_here = len(positions)
        outcomes = {norm: rows[positions] for norm, rows in broken.items()} if n_here else {}
        broken.clear()  # the full-size grid outcomes, before the gathered ones arrive
        positions, outcomes = world.gather_rows(positions, outcomes)
        if len(positions) and n_here < len(positions):
            image_shape = tuple(ctx.data.image_shape)
        examples = [a for part in world.gather_ordered(batch_examples) for a in part][: s.examples]

        # The smallest fooling budgets, once every batch has bracketed its images on the grid:
        # the search is confined to the images that can move the median (minimal_epsilon).
        min_eps: dict[str, list[float]] = {}
        for norm, grid in budgets.items():
            spec = self.attack_spec(norm).deterministic()
            none = torch.zeros(0, len(grid), dtype=torch.bool, device=ctx.device)
            found = minimal_epsilon(
                lambda rows, eps, spec=spec: self._attack_rows(ctx, module, spec, positions[rows], eps),
                grid,
                outcomes[norm] if len(positions) else none,
                bisection_steps=s.bisection_steps,
                cap=min(max_budget(norm, image_shape), s.min_eps_search_factor * grid[-1]),
                median_only=gradients.REUSE,
            )
            min_eps[norm] = found.tolist()
        return self._findings(budgets, modes, fooled, min_eps, n_images, n_correct, examples)

    def _attack_rows(
        self, ctx: AuditContext, module: LogitsModule, spec: AttackSpec, index: torch.Tensor, eps: float | torch.Tensor
    ) -> torch.Tensor:
        """Success bool [R] of ``spec`` (untargeted) on the evaluation images at eval positions
        ``index`` (long [R], increasing), at one budget or per-image budgets [R].

        The images of one evaluation batch are attacked together, as the grid attacked them:
        on the process that ran that batch (whose store holds their gradients), so one process
        and several attack the same batches; the outcomes are gathered in order."""
        world = ctx.world
        index = index.to(ctx.device)
        numbers = torch.div(index, ctx.batch_size, rounding_mode="floor")
        outcomes: list[tuple[int, torch.Tensor]] = []
        start = 0
        for number, count in zip(*(t.tolist() for t in torch.unique_consecutive(numbers, return_counts=True))):
            rows = slice(start, start + count)
            start += count
            if not world.owns_batch(number):
                continue
            batch = next(iter(ctx.data.batches("eval", ctx.batch_size, indices=index[rows].tolist()))).to(ctx.device)
            budget = eps[rows] if isinstance(eps, torch.Tensor) else eps
            grads = self.clean_gradients(ctx, module, batch.index, batch.images, batch.labels, {})
            point = self.clean_point(ctx, module, spec, batch.index, batch.images, batch.labels)
            out = run_attack(
                module, spec, batch.images, batch.labels, budget, gradient=grads.get("untargeted"), clean_point=point
            )
            outcomes.append((number, out.success))
        parts = world.gather_ordered(outcomes)
        if not parts:
            return torch.zeros(0, dtype=torch.bool, device=ctx.device)
        return torch.cat([success.to(ctx.device) for success in parts])

    def _findings(self, budgets, modes, fooled, min_eps, n_images, n_correct, examples) -> Findings:
        metrics: dict[str, float] = {
            "clean_acc": n_correct / n_images,
            "n_images": float(n_images),
            "n_attacked": float(n_correct),
        }
        curves: list[Curve] = []
        rises: list[str] = []
        summary: list[str] = []
        for norm, grid in budgets.items():
            accs, los, his, parts = [], [], [], []
            for eps in grid:
                label = budget_label(norm, eps)
                k = fooled[("untargeted", norm, eps)]
                acc = (n_correct - k) / n_images
                lo, hi = wilson_interval(n_correct - k, n_images)
                metrics[f"robust_acc@{label}"] = acc
                metrics[f"robust_acc_lo@{label}"] = lo
                metrics[f"robust_acc_hi@{label}"] = hi
                metrics[f"attack_success@{label}"] = k / n_correct if n_correct else math.nan
                for mode in modes[1:]:
                    if (mode, norm, eps) in fooled:
                        hits = fooled[(mode, norm, eps)]
                        metrics[f"targeted_success_{mode}@{label}"] = hits / n_correct if n_correct else math.nan
                if accs and acc > his[-1]:
                    rises.append(f"{budget_label(norm, grid[len(accs) - 1])} -> {label}")
                accs.append(acc)
                los.append(lo)
                his.append(hi)
                parts.append(f"{label.split('_', 1)[1]} {acc:.2f}")
            spec = self.attack_spec(norm)
            curves.append(accuracy_curve(norm, spec.describe(), grid, accs, los, his))
            metrics[_min_eps_metric(norm)] = median(min_eps[norm])
            summary.append(f"{spec.describe()}: robust acc " + ", ".join(parts))
        first = next(iter(budgets))
        metrics["attack_success"] = metrics[f"attack_success@{budget_label(first, budgets[first][-1])}"]
        metrics["rises_with_eps"] = float(len(rises))
        limit = self.settings.min_eps_search_factor
        found = [
            f"{_NORM_NAMES[n]} {_format_eps(n, metrics[_min_eps_metric(n)], limit * grid[-1])}"
            for n, grid in budgets.items()
        ]
        message = (
            f"clean acc {metrics['clean_acc']:.2f} ({n_correct}/{n_images}); " + "; ".join(summary)
            + f"; median smallest fooling eps {', '.join(found)}"
        )
        if not n_correct:
            message += "; no correctly classified image to attack, so robust accuracy is 0 trivially"
        message += ". Robust accuracy is reported, not gated (gate: rises_with_eps <= 0)"
        if rises:
            message += f"; robust accuracy rose beyond its 95% interval at {', '.join(rises)}: the attack is failing"
        return Findings(
            metrics=metrics,
            message=message,
            artifacts=examples,
            curves=curves,
            details={
                "attack": {norm: self.attack_spec(norm).describe() for norm in budgets},
                "targeted": list(modes[1:]),
                "min_eps_method": (
                    "bisection over epsilon with the attack from the clean image, bracketed by the "
                    "epsilon grid (doubling past it up to min_eps_search_factor x the largest budget); "
                    "median over correctly classified images, inf where no budget fooled the image"
                    + ("; images whose bracket cannot hold the median are not searched further (the "
                       "median is that of the full search)" if gradients.REUSE else "")
                ),
                "rises_with_eps": rises,
            },
        )

    def _examples(
        self, ctx, spec, norm, grid, images, labels, clean_logits, broken, adversarial, adv_logits, wanted
    ) -> list[Artifact]:
        names = list(ctx.data.class_names)

        def name(k: int) -> str:
            return repr(names[k]) if k < len(names) else f"class {k}"

        out: list[Artifact] = []
        fooled_rows = broken.any(1).nonzero().squeeze(1).tolist()
        for row in fooled_rows[:wanted]:
            j = int(broken[row].float().argmax())  # the smallest budget that fooled it
            png, gain = example_strip(images[row], adversarial[j][row])
            p_clean = torch.softmax(clean_logits[row], 0)
            p_adv = torch.softmax(adv_logits[j][row].float(), 0)
            y, a = int(labels[row]), int(p_adv.argmax())
            label = budget_label(norm, grid[j])
            out.append(Artifact(
                name=f"example_{len(out) + 1}_{label}",
                kind="image/png",
                data=png,
                caption=(
                    f"{spec.describe()} at {label}: {name(y)} (p={float(p_clean[y]):.2f}) -> {name(a)} "
                    f"(p={float(p_adv[a]):.2f}); original | adversarial | perturbation x{gain:.0f}"
                ),
            ))
        return out


def attacked_positions(ctx: AuditContext, correct: torch.Tensor) -> list[torch.Tensor]:
    """The eval positions of the correctly classified images (``correct``, bool [N]), one long
    tensor per evaluation batch that has any, on ``correct``'s device: the images each batch of
    the white-box checks attacks."""
    out = []
    for start in range(0, ctx.n_images, ctx.batch_size):
        index = torch.arange(start, min(start + ctx.batch_size, ctx.n_images), device=correct.device)
        index = index[correct[index]]
        if len(index):
            out.append(index)
    return out


def _min_eps_metric(norm: str) -> str:
    return "median_min_eps" if norm == "linf" else f"median_min_eps_{norm}"


def _format_eps(norm: str, eps: float, limit: float) -> str:
    if math.isnan(eps):
        return "n/a"
    if math.isinf(eps):
        return f"above {_format_eps(norm, limit, limit)} (the search limit)"
    return f"{eps * 255:.2f}/255" if norm == "linf" else f"{eps:.3g}"


class FGSMRobustness(_RobustAccuracy):
    """Robust accuracy under the fast gradient sign method (one step per budget).

    Linf: x + eps * sign(grad); L2: x + eps * grad / ||grad||. Cheap and weak: its job is to be
    the floor that PGD must beat (``whitebox.masking`` flags it when PGD does not). Each image's
    gradient is computed once per loss target (untargeted, each targeted mode), as torchattacks
    computes it, and every budget, norm and bisection step is one step along it and one
    forward pass; the untargeted gradients are shared with ``whitebox.masking``.

    Pass/fail: robust accuracy is reported, not gated; the check fails when robust accuracy
    rises with epsilon beyond its 95% interval (see ``_RobustAccuracy``).
    """

    id = "whitebox.fgsm"
    shards = True
    Settings = FGSMSettings
    quick_settings = {"l2_eps": [], "targeted": [], "bisection_steps": 2, "min_eps_search_factor": 2.0, "examples": 2}

    def attack_spec(self, norm: str) -> AttackSpec:
        return AttackSpec("fgsm", norm)

    def clean_gradients(
        self, ctx: AuditContext, module: LogitsModule, index: torch.Tensor, images: torch.Tensor,
        labels: torch.Tensor, targets: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        # One gradient per image and loss target for every budget, norm and bisection step;
        # the untargeted ones shared with whitebox.masking.
        return gradients.clean_gradients_for(ctx, module, index, images, labels, targets)

    def record_untargeted(
        self, ctx: AuditContext, norm: str, eps: float, index: torch.Tensor, success: torch.Tensor
    ) -> None:
        if gradients.REUSE:  # a step along the shared gradient: whitebox.masking's FGSM probe reads it
            gradients.shared_fgsm_outcomes(ctx).keep(norm, eps, index, success)

    def clean_gradient_cost(self, ctx: AuditContext, positions: list[torch.Tensor], modes: tuple[str, ...]) -> Cost:
        if not gradients.REUSE:
            return Cost()
        labels = ctx.clean.labels
        # untargeted: a batch computes its gradients unless every row is already in the store
        # (whitebox.masking ran first); targeted: one pass per image and mode, never shared
        # with other checks, and at most that: where two modes pick one class for an image
        # (a random class that is the least likely one), its gradient is computed once
        untargeted = sum(len(p) for p in positions if not gradients.untargeted_gradients_kept(ctx, p, labels[p]))
        targeted = (len(modes) - 1) * sum(len(p) for p in positions)
        return Cost(gradient=untargeted + targeted, maximum=len(modes) > 2)



class PGDRobustness(_RobustAccuracy):
    """Robust accuracy under projected gradient descent (Madry et al. 2018), Linf and L2.

    Untargeted runs maximize the cross-entropy of the true class; targeted runs minimize it
    towards a random wrong class and towards the least likely class.

    Pass/fail: robust accuracy is reported, not gated; the check fails when robust accuracy
    rises with epsilon beyond its 95% interval (see ``_RobustAccuracy``).
    """

    id = "whitebox.pgd"
    shards = True
    Settings = PGDSettings
    quick_settings = {"l2_eps": [], "targeted": [], "steps": 5, "bisection_steps": 1, "min_eps_search_factor": 2.0,
                      "examples": 2}

    def attack_spec(self, norm: str) -> AttackSpec:
        s = self.settings
        return AttackSpec("pgd", norm, s.steps, s.rel_step_size, s.random_start, s.restarts)

    def clean_point(
        self, ctx: AuditContext, module: LogitsModule, spec: AttackSpec, index: torch.Tensor, images: torch.Tensor,
        labels: torch.Tensor,
    ) -> CleanPoint | None:
        # From the clean image (the minimal-epsilon search; the grid too without random start),
        # the first step reads the untargeted gradient shared with whitebox.fgsm and masking.
        if not gradients.REUSE or spec.random_start:
            return None
        return gradients.untargeted_clean_point(ctx, module, index, images, labels)

    def clean_gradient_cost(self, ctx: AuditContext, positions: list[torch.Tensor], modes: tuple[str, ...]) -> Cost:
        s = self.settings
        budgets = self._attack_plan(ctx.clean.num_classes)[0]
        searched = any(
            minimal_epsilon_rounds(grid, min(max_budget(norm, tuple(ctx.data.image_shape)),
                                             s.min_eps_search_factor * grid[-1]), s.bisection_steps)
            for norm, grid in budgets.items()
        )
        if not gradients.REUSE or (s.random_start and not searched):
            return Cost()
        # the untargeted gradients the runs from the clean image read: computed once per image
        # unless whitebox.fgsm or whitebox.masking left them in the store (the search may reach
        # fewer images: then the whole estimate is a maximum)
        labels = ctx.clean.labels
        return Cost(gradient=sum(len(p) for p in positions if not gradients.untargeted_gradients_kept(ctx, p, labels[p])))
