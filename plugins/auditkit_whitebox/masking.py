"""Check ``whitebox.masking``: the warning signs of a broken white-box evaluation (Carlini et al.
2019's checklist, AutoAttack's flags), so that gradient masking is never reported as robustness."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from auditkit import Check, Cost, Findings, Threshold, UsageError, skip
from auditkit.toolkit import AuditContext, Batch, LogitsModule, oom_backoff, wilson_interval

from auditkit_whitebox import gradients
from auditkit_whitebox.attacks import (
    NORMS, UNBOUNDED_STEP_SIZES, AttackSpec, attack_cost, budget_label, input_gradient, run_attack, times,
    unbounded_attack, unbounded_attack_cost,
)

TRANSFER_CHECK = "transfer.proxy"
TRANSFER_METRIC = "transfer_success"

# Each flag, as named in the metrics, and what it means when raised.
FLAGS: dict[str, str] = {
    "eps_insensitive": "robust accuracy does not fall as epsilon grows",
    "pgd_weaker_than_fgsm": "PGD leaves more images correct than FGSM at the same epsilon",
    "unbounded_attack_fails": "an attack with an unbounded budget does not reach near-zero accuracy",
    "zero_gradients": "many input gradients are exactly zero",
    "budget_sensitive": "more PGD steps and restarts change robust accuracy a lot",
    "transfer_beats_whitebox": "a black-box transfer attack is stronger than the white-box attack",
    "randomized_outputs": "the model gives different logits for the same input",
    "probability_outputs": "the model returns probabilities, not logits",
}

# Logits of the same images in different batches agree to float rounding; randomness (dropout
# left on, random input transforms) moves them by far more than this, relative to their scale.
_REPEAT_RTOL = 1e-3


# budget_sensitive needs the stronger attack to fool this many more images: 0.5**5 = 0.031 is
# the first one-sided sign-test p-value below 0.05, so fewer is within random-start noise.
MIN_NEWLY_FOOLED = 5


def budget_sensitive(reference_acc: float, strong_acc: float, newly_fooled: int, margin: float) -> bool:
    """Whether a stronger PGD (more steps and restarts) changed robust accuracy "a lot": by
    more than ``margin`` and on at least :data:`MIN_NEWLY_FOOLED` more images. Random starts
    make two runs of one attack differ by an image or two, so a gain of fewer images is no
    evidence that the reference attack was too weak."""
    return reference_acc - strong_acc > margin and newly_fooled >= MIN_NEWLY_FOOLED


@dataclass
class MaskingSettings:
    """Settings of ``whitebox.masking``.

    :ivar eps: the reference Linf budget; robust accuracy is probed at eps/4, eps and 4*eps.
    :ivar steps: PGD steps of the reference attack (as ``whitebox.pgd``'s default).
    :ivar rel_step_size: PGD step size as a fraction of eps (as ``whitebox.pgd``'s default).
    :ivar restarts: random restarts of the reference attack.
    :ivar strong_steps_factor: the budget probe runs this many times the steps, of the same size...
    :ivar strong_restarts: ...with this many random restarts, on the images the reference attack left.
    :ivar unbounded_steps: sign steps of the unbounded attack (Linf eps = 1, from the clean image),
        shared over stages whose step size halves from 1/8 to 1/128 (see ``unbounded_attack``).
    :ivar tolerance: how far a comparison may go the wrong way before a flag is raised, as a
        share of images; never less than one image, so a single image raises no flag. The
        unbounded attack's survivors raise their flag only when the lower end of their share's
        95% confidence interval lies above it.
    """

    eps: float = 8 / 255
    steps: int = 10
    rel_step_size: float = 0.25
    restarts: int = 1
    strong_steps_factor: int = 4
    strong_restarts: int = 2
    unbounded_steps: int = 100
    tolerance: float = 0.05

    def __post_init__(self) -> None:
        where = '[tool.auditkit.checks."whitebox.masking"]'
        if not (math.isfinite(self.eps) and 0 < self.eps <= 1):
            raise UsageError(f"{where} eps: must be in (0, 1], got {self.eps!r}")
        for name in ("steps", "restarts", "strong_steps_factor", "strong_restarts", "unbounded_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"{where} {name}: must be >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.rel_step_size) and self.rel_step_size > 0):
            raise UsageError(f"{where} rel_step_size: must be > 0, got {self.rel_step_size!r}")
        if not 0 <= self.tolerance < 1:
            raise UsageError(f"{where} tolerance: must be in [0, 1), got {self.tolerance!r}")


class GradientMasking(Check):
    """Flags that the white-box evaluation itself is broken (gradient masking or obfuscation).

    Recomputes what it needs with small probes rather than relying on other checks' results:
    FGSM and PGD at the reference Linf budget, PGD at a quarter and four times that budget,
    an unbounded attack (``unbounded_attack``: Linf eps = 1 from the clean image, with a
    decaying step size), one input gradient per image, a
    repeated forward pass, and a stronger PGD (more steps and restarts) at the budget where
    the reference attack fools about half the images. Work that is the same computation is
    read instead (``gradients.REUSE``): the input gradients ``whitebox.fgsm`` computed, its
    FGSM outcome at the reference budget, and, as the repeated forward pass of the images
    it attacks, the forward pass that gave their gradients. When ``transfer.proxy`` ran on the same
    model, its transfer success at each budget (its ``transfer_success`` curves) is compared
    with white-box PGD at that budget.

    Each flag is a 0/1 metric with a default threshold ``<flag> <= 0``: the check fails when
    any flag is raised, naming each, and a flag can be dropped from the config
    (``thresholds = {budget_sensitive = false}``). ``flags`` counts the raised ones. Labels
    are used when the data has them, the clean predictions otherwise.
    """

    id = "whitebox.masking"
    shards = True
    requires = ("white_box",)
    headline = ("flags",)
    quick_settings = {"steps": 5, "strong_steps_factor": 2, "strong_restarts": 1}
    # <budget> as budget_label writes it; whitebox_success@ only when transfer.proxy ran first.
    metrics = (
        "n_images", "n_correct", "clean_acc", "zero_grad_share", "randomized_share", "unbounded_acc",
        "unbounded_survivors", "flags", *FLAGS,
        "fgsm_acc@*", "pgd_acc@*", "strong_pgd_acc@*", "whitebox_success@*",
    )
    directions = {
        "flags": "lower", **dict.fromkeys(FLAGS, "lower"), "clean_acc": "higher", "whitebox_success@*": "lower",
        # the probes' own numbers: evidence behind the flags, not scores
        "n_*": None, "zero_grad_share": None, "randomized_share": None, "unbounded_acc": None,
        "unbounded_survivors": None, "fgsm_acc@*": None, "pgd_acc@*": None, "strong_pgd_acc@*": None,
    }
    thresholds = tuple(Threshold(flag, "max", 0) for flag in FLAGS)
    Settings = MaskingSettings
    # Every probe attacks the correctly classified images only, so they are the sample.
    sample_metric = "n_correct"
    # With none of 10 images surviving, the survival share's 95% upper bound is 0.28 (Wilson):
    # below 10 a pass bounds nothing, and one image is over twice the default 5% tolerance.
    min_sample = 10
    # An attack cannot change a constant output: every flag would describe the model, not the attack.
    constant_sensitive = True

    def _ladder(self) -> list[float]:
        s = self.settings
        return sorted({s.eps / 4, s.eps, min(4 * s.eps, 1.0)})

    def _reference(self) -> AttackSpec:
        s = self.settings
        return AttackSpec("pgd", "linf", s.steps, s.rel_step_size, True, s.restarts)

    def _strong(self) -> AttackSpec:
        # Same step size, more of them: the stronger attack both converges further and reaches
        # further, which is what "more iterations should not change the result" asks.
        s = self.settings
        return AttackSpec("pgd", "linf", s.steps * s.strong_steps_factor, s.rel_step_size, True, s.strong_restarts)

    def estimate(self, ctx: AuditContext) -> Cost:
        """Exact for the repeated forward pass, the shared gradients, FGSM and each attack's first
        restart and first stage; at most, where a probe stops early or depends on what it found:
        the zero-gradient confirmation (every attacked image's gradient exactly zero, unless the
        gradients are already kept and say which are), PGD's restarts (no image fooled), the
        unbounded attack's later stages (none fooled), and the stronger PGD (every attacked
        image left by the reference attack)."""
        s = self.settings
        clean = ctx.clean
        labels_all = clean.labels if clean.labels is not None else clean.preds
        correct = clean.preds == labels_all
        n_correct = int(correct.sum())
        if n_correct == 0:
            return Cost()  # skipped before any pass
        reuse = gradients.REUSE
        outcomes = gradients.shared_fgsm_outcomes(ctx) if ctx.has_shared(gradients.fgsm_outcomes_key(ctx)) else None
        cost = Cost()
        for start in range(0, ctx.n_images, ctx.batch_size):
            rows = torch.arange(start, min(start + ctx.batch_size, ctx.n_images), device=correct.device)
            index = rows[correct[rows]]
            k = len(index)
            # the repeated forward pass: the attacked images' gradient pass stands in for theirs
            cost += Cost(forward=len(rows) - k if reuse and k else len(rows))
            if not k:
                continue
            if reuse:
                # the shared gradients, then the summed-loss confirmation of the exact zeros among
                # them: known when the gradients are kept (whitebox.fgsm ran first), else at most all
                if gradients.untargeted_gradients_kept(ctx, index, labels_all[index]):
                    kept, _ = gradients.shared_clean_gradients(ctx).rows(index, labels_all[index], _kept_only)
                    cost += Cost(gradient=int(gradients.zero_gradient_rows(kept).sum()))
                else:
                    cost += Cost(gradient=2 * k)
                known = outcomes is not None and outcomes.success("linf", s.eps, index) is not None
                cost += Cost() if known else attack_cost(AttackSpec("fgsm", "linf"), k, gradient_known=True)
            else:
                cost += Cost(gradient=k) + attack_cost(AttackSpec("fgsm", "linf"), k)
            cost += times(attack_cost(self._reference(), k), len(self._ladder()))
            cost += unbounded_attack_cost(k, s.unbounded_steps, first_gradient_known=reuse)
        transfer = _transfer_budgets(_transfer_results(ctx), max(s.tolerance, 1 / n_correct))
        for norm, _ in transfer:
            cost += attack_cost(AttackSpec("pgd", norm, s.steps, s.rel_step_size, True, s.restarts), n_correct)
        # the stronger PGD attacks the images the reference attack left: at most every one
        return dataclasses.replace(cost + attack_cost(self._strong(), n_correct), maximum=True)

    def run(self, ctx: AuditContext) -> Findings:
        s = self.settings
        clean = ctx.clean
        labels_all = clean.labels if clean.labels is not None else clean.preds
        correct = clean.preds == labels_all
        n, n_correct = len(clean), int(correct.sum())
        if n_correct == 0:
            skip(f"the model classifies none of the {n} images correctly: there is nothing for an attack to fool")
        module = LogitsModule(ctx.target)
        ladder = self._ladder()
        reference = self._reference()
        margin = max(s.tolerance, 1 / n)
        margin_correct = max(s.tolerance, 1 / n_correct)
        reported = _transfer_results(ctx)
        transfer = _transfer_budgets(reported, margin_correct)
        count = {"zero_grad": 0, "random": 0, "fgsm": 0, "unbounded": 0}
        ladder_fooled = {eps: 0 for eps in ladder}
        transfer_fooled = {key: 0 for key in transfer}
        reference_success: list[torch.Tensor] = []  # per batch [B_correct, len(ladder)]

        def probe_batch(batch: Batch) -> None:
            # A function of its own: what a batch makes (its gradients, adversarial examples)
            # is freed when it returns, not kept by the loop's variables through the next batch.
            logits = clean.logits_at(batch.index)
            keep = correct[batch.index]
            index, images, labels = batch.index[keep], batch.images[keep], labels_all[batch.index][keep]
            grad = None
            if gradients.REUSE and bool(keep.any()):
                # The clean-point gradient whitebox.fgsm steps along, computed once per image:
                # the zero test, FGSM and the unbounded attack's first step all read it, and
                # the forward pass that gave it is these images' repeated forward pass.
                grad, second = gradients.untargeted_gradients(ctx, module, index, images, labels)
                again = torch.empty_like(logits)
                again[keep] = second.to(again.dtype)
                if not bool(keep.all()):
                    with torch.no_grad():
                        again[~keep] = ctx.forward(batch.images[~keep])
            else:
                with torch.no_grad():
                    again = ctx.forward(batch.images)
            scale = logits.abs().amax(1).clamp(min=1)
            count["random"] += int(((again - logits).abs().amax(1) > _REPEAT_RTOL * scale).sum())
            if not bool(keep.any()):
                reference_success.append(torch.zeros(0, len(ladder), dtype=torch.bool, device=ctx.device))
                return
            if grad is not None:
                zero = gradients.zero_gradient_rows(grad)
                if bool(zero.any()):
                    # The batch mean scales each gradient by 1/B: confirm on the summed loss
                    # that a zero is no underflow of that scale.
                    summed = oom_backoff(lambda x, y: input_gradient(ctx.target, x, y), images[zero], labels[zero])
                    count["zero_grad"] += int(gradients.zero_gradient_rows(summed).sum())
            else:
                summed = oom_backoff(lambda x, y: input_gradient(ctx.target, x, y), images, labels)
                count["zero_grad"] += int(gradients.zero_gradient_rows(summed).sum())
            # whitebox.fgsm's step at this budget, when it made it: the same step along the same
            # gradient on the same images, scored the same way
            fooled = gradients.shared_fgsm_outcomes(ctx).success("linf", s.eps, index) if grad is not None else None
            if fooled is None:
                fooled = run_attack(module, AttackSpec("fgsm", "linf"), images, labels, s.eps, gradient=grad).success
            count["fgsm"] += int(fooled.sum())
            rungs = []
            for eps in ladder:  # each attack's adversarial images freed before the next one's
                success = run_attack(module, reference, images, labels, eps).success
                ladder_fooled[eps] += int(success.sum())
                rungs.append(success)
            reference_success.append(torch.stack(rungs, 1))
            unbounded = unbounded_attack(module, images, labels, s.unbounded_steps, first_gradient=grad).success
            count["unbounded"] += int(unbounded.sum())
            for norm, eps in transfer:
                spec = AttackSpec("pgd", norm, s.steps, s.rel_step_size, True, s.restarts)
                transfer_fooled[(norm, eps)] += int(run_attack(module, spec, images, labels, eps).success.sum())

        for batch in ctx.progress(ctx.batches(), total=ctx.n_batches(), desc="probes"):
            probe_batch(batch)

        # every process's batches (one process: its own), summed
        tallies = [*count.values(), *ladder_fooled.values(), *transfer_fooled.values()]
        summed = ctx.world.all_sum(torch.tensor(tallies, dtype=torch.long)).tolist()
        for store in (count, ladder_fooled, transfer_fooled):
            for key in store:
                store[key], summed = int(summed[0]), summed[1:]

        def acc(fooled: int) -> float:
            return (n_correct - fooled) / n

        ladder_acc = {eps: acc(k) for eps, k in ladder_fooled.items()}
        # The budget probe goes where the curve is steepest: the rung where the reference attack
        # leaves about half the correct images, since that is where a weak attack shows most.
        target_acc = n_correct / n / 2
        rung = min(range(len(ladder)), key=lambda i: (abs(ladder_acc[ladder[i]] - target_acc), i))
        strong = self._strong()
        newly_fooled = 0
        # the same batches again, drawing from a stream of their own (the strong attack's
        # random starts are not the reference attack's)
        for batch, success in zip(ctx.batches(stream=1), reference_success):
            keep = correct[batch.index]
            survivors = ~success[:, rung]
            if not bool(survivors.any()):
                continue
            images, labels = batch.images[keep][survivors], labels_all[batch.index][keep][survivors]
            newly_fooled += int(run_attack(module, strong, images, labels, ladder[rung]).success.sum())

        newly_fooled = ctx.world.all_sum(newly_fooled)
        eps_label = budget_label("linf", s.eps)
        rung_label = budget_label("linf", ladder[rung])
        small, large = ladder_acc[ladder[0]], ladder_acc[ladder[-1]]
        fgsm_acc, pgd_acc = acc(count["fgsm"]), ladder_acc[s.eps]
        strong_acc = ladder_acc[ladder[rung]] - newly_fooled / n
        zero_share = count["zero_grad"] / n_correct
        survivors = n_correct - count["unbounded"]
        survive_low, survive_high = wilson_interval(survivors, n_correct)
        random_share = count["random"] / n
        # a chunk at a time: the scores may live in a file (a per-image record)
        probabilities = all(_looks_like_probabilities(clean.logits_at(chunk)) for chunk in torch.arange(len(clean)).split(4096))

        metrics: dict[str, float] = {
            "n_images": float(n),
            "n_correct": float(n_correct),
            "clean_acc": n_correct / n,
            "zero_grad_share": zero_share,
            "randomized_share": random_share,
            f"fgsm_acc@{eps_label}": fgsm_acc,
            **{f"pgd_acc@{budget_label('linf', eps)}": a for eps, a in ladder_acc.items()},
            f"strong_pgd_acc@{rung_label}": strong_acc,
            "unbounded_acc": acc(count["unbounded"]),
            "unbounded_survivors": float(survivors),
        }
        evidence = {
            "eps_insensitive": (
                large > margin and small - large <= margin,
                f"PGD robust accuracy {small:.2f} at {budget_label('linf', ladder[0])} and {large:.2f} at "
                f"{budget_label('linf', ladder[-1])}",
            ),
            "pgd_weaker_than_fgsm": (
                pgd_acc - fgsm_acc > margin,
                f"robust accuracy at {eps_label}: PGD {pgd_acc:.2f}, FGSM {fgsm_acc:.2f}",
            ),
            # A strong attack's survivors are evidence only beyond sampling noise: the flag needs
            # the lower 95% bound of their share above the tolerance, and more than one image.
            "unbounded_attack_fails": (
                survivors > 1 and survive_low > s.tolerance,
                f"{survivors} of {n_correct} correctly classified images survive {_describe_unbounded(s)} "
                f"(95% interval {survive_low:.0%}-{survive_high:.0%})",
            ),
            "zero_gradients": (
                zero_share > margin_correct,
                f"{zero_share:.0%} of correctly classified images have an exactly zero input gradient",
            ),
            "budget_sensitive": (
                budget_sensitive(ladder_acc[ladder[rung]], strong_acc, newly_fooled, margin),
                f"robust accuracy at {rung_label}: {ladder_acc[ladder[rung]]:.2f} with {reference.describe()}, "
                f"{strong_acc:.2f} adding {strong.describe()} ({newly_fooled} more images fooled)",
            ),
            "randomized_outputs": (
                random_share > margin,
                f"{random_share:.0%} of images get different logits on a second forward pass",
            ),
            "probability_outputs": (
                probabilities,
                "every output row lies in [0,1] and sums to 1: cross-entropy on probabilities saturates",
            ),
        }
        beaten = []
        for (norm, eps), (label, value) in transfer.items():
            white = transfer_fooled[(norm, eps)] / n_correct
            metrics[f"whitebox_success@{budget_label(norm, eps)}"] = white
            if value - white > margin_correct:
                beaten.append(f"{label}: transfer {value:.2f} vs white-box PGD {white:.2f}")
        if beaten:
            transfer_evidence = "; ".join(beaten)
        elif not reported:
            transfer_evidence = "no transfer.proxy result for this model"
        else:
            transfer_evidence = (
                f"no transfer attack beats white-box PGD by more than {margin_correct:.0%} ({len(reported)} budgets)"
            )
        evidence["transfer_beats_whitebox"] = (bool(beaten), transfer_evidence)
        raised = [flag for flag in FLAGS if evidence[flag][0]]
        for flag in FLAGS:
            metrics[flag] = float(evidence[flag][0])
        metrics["flags"] = float(len(raised))
        if raised:
            message = f"{len(raised)} flag(s): " + "; ".join(f"{f}: {FLAGS[f]} ({evidence[f][1]})" for f in raised)
            if int(clean.preds.unique().numel()) == 1:
                message += (
                    "; note: the model predicts one class for every image, and no attack changes a constant "
                    "function: these flags describe the model (untrained?) more than the attack"
                )
        else:
            message = (
                f"no flags; FGSM {fgsm_acc:.2f} / PGD {pgd_acc:.2f} at {eps_label}, "
                f"unbounded {metrics['unbounded_acc']:.2f}, "
                f"zero gradients {zero_share:.0%}, stronger PGD {strong_acc:.2f} at {rung_label}"
            )
        return Findings(
            metrics=metrics,
            message=message,
            details={
                "flags": {
                    f: {"raised": evidence[f][0], "meaning": FLAGS[f], "evidence": evidence[f][1]} for f in FLAGS
                },
                "not_evaluated": [] if reported else ["transfer_beats_whitebox"],
                "reference_attack": reference.describe(),
                "strong_attack": strong.describe(),
                "unbounded_attack": _describe_unbounded(s),
                "unbounded_survivors": {
                    "survivors": survivors, "of": n_correct, "interval_95": [survive_low, survive_high],
                },
                "margin": margin,
            },
        )


def _describe_unbounded(s: MaskingSettings) -> str:
    sizes = UNBOUNDED_STEP_SIZES[: max(1, min(s.unbounded_steps, len(UNBOUNDED_STEP_SIZES)))]
    return (
        f"PGD Linf eps=1 ({s.unbounded_steps} steps, step size halving from {sizes[0]:g} to {sizes[-1]:g}, "
        "clean start)"
    )


def _transfer_results(ctx: AuditContext) -> dict[tuple[str, float], tuple[str, float]]:
    """Transfer success of ``transfer.proxy`` on this model (its main ``transfer_success``
    curves: the strongest attack at each budget), by (norm, eps), with the metric's name."""
    found: dict[tuple[str, float], tuple[str, float]] = {}
    for result in ctx.results:
        if result.check != TRANSFER_CHECK or result.model != ctx.target.name:
            continue
        if result.outcome.value not in ("passed", "failed"):
            continue  # a skipped result keeps numbers measured on too little evidence: no yardstick
        for curve in result.curves:
            if curve.metric != TRANSFER_METRIC or curve.variant or curve.norm not in NORMS:
                continue
            for point in curve.points:
                if math.isfinite(point.value):
                    label = f"{TRANSFER_METRIC}@{budget_label(curve.norm, point.x)}"
                    found[(curve.norm, point.x)] = (label, float(point.value))
    return found


def _kept_only() -> tuple[torch.Tensor, torch.Tensor]:
    raise AssertionError("read only after CleanGradients.kept said every row is there")


def _transfer_budgets(
    reported: dict[tuple[str, float], tuple[str, float]], margin_correct: float
) -> dict[tuple[str, float], tuple[str, float]]:
    """The transfer results that cost a white-box run: a transfer success within the tolerance
    ``margin_correct`` cannot beat any white-box success, so only the budgets above it."""
    return {key: found for key, found in reported.items() if found[1] > margin_correct}


def _looks_like_probabilities(outputs: torch.Tensor) -> bool:
    outputs = outputs.float()
    in_range = bool(((outputs >= -1e-6) & (outputs <= 1 + 1e-6)).all())
    return in_range and bool(((outputs.sum(1) - 1).abs() < 1e-3).all())
