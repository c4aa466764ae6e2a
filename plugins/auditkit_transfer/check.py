"""The ``transfer.proxy`` check: train a proxy on the target's answers, attack the proxy
white-box, and measure how often the examples fool the target (Papernot et al. 2017)."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import torch

from auditkit import Artifact, Check, Cost, Findings, TargetError, Threshold, UsageError, skip
from auditkit.toolkit import AuditContext, Curve, CurvePoint, NORMS, oom_backoff, wilson_interval

from auditkit_transfer import attacks
from auditkit_transfer.attacks import (
    ATTACKS,
    FROM_CLEAN,
    MODES,
    AttackConfig,
    TransferMeasurement,
    random_other_class,
    supported,
    threat_key,
)
from auditkit_transfer.proxy import (
    TrainingLog,
    TrainingPlan,
    build_proxy,
    jacobian_augmentation,
    require_input_gradient,
    train_proxy,
)

CHECK_ID = "transfer.proxy"


@dataclass(frozen=True)
class QueryPlan:
    """The target queries that train the proxy, as :meth:`ProxyTransfer.run` makes them when the
    time cap (``max_train_seconds``) does not stop training early.

    :ivar seed: natural images from the train split, queried first.
    :ivar validation: how many of them are held out for early stopping.
    :ivar augmentation: the new points queried in each Jacobian augmentation round, each at
        most the proxy's training images so far and within what the budget leaves.
    """

    seed: int
    validation: int
    augmentation: tuple[int, ...]

    @property
    def queries(self) -> int:
        return self.seed + sum(self.augmentation)

    def training_sizes(self) -> list[int]:
        """The proxy's training images in each training round (one round more than there are
        augmentation rounds): the seed images less the held-out ones, then growing by each
        round's new points."""
        sizes = [self.seed - self.validation]
        for new in self.augmentation:
            sizes.append(sizes[-1] + new)
        return sizes


@dataclass(frozen=True)
class ProxyPasses:
    """Image passes through the proxy network (not the audited model), at most: training
    stops early at a validation plateau (``patience``) or at the time cap.

    :ivar training: forward+backward to its weights, in train mode.
    :ivar input_gradient: forward+backward to its input: the gradient probe, Jacobian
        augmentation and the attacks' steps.
    :ivar forward: without gradients: validation after each epoch, agreement with the
        target on the evaluation images, and scoring each adversarial example.
    """

    training: int
    input_gradient: int
    forward: int

    def describe(self) -> str:
        return (
            f"proxy network, not the audited model: at most {self.training:,} training image passes "
            f"(forward+backward to its weights), {self.input_gradient:,} forward+backward to its input "
            f"(augmentation, attacks) and {self.forward:,} forward (validation, agreement, scoring)"
        )


class Oracle:
    """The target seen only through ``query()``: answers as probabilities (None for a labels-only
    target) and labels, in batches, with every image counted in :attr:`count`."""

    def __init__(self, target: Any, batch_size: int, num_classes: int):
        self.target = target
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.count = 0

    @property
    def gives_scores(self) -> bool:
        return getattr(self.target, "returns", "scores") == "scores"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        probs, labels = [], []
        for start in range(0, int(images.shape[0]), self.batch_size):
            chunk = images[start : start + self.batch_size]
            out = oom_backoff(self.target.query, chunk)
            self.count += int(chunk.shape[0])
            if self.gives_scores:
                probs.append(out.float())
                labels.append(out.argmax(dim=1))
            else:
                labels.append(out.long())
        label_t = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=images.device)
        if label_t.numel() and int(label_t.max()) >= self.num_classes:
            raise TargetError(f"{self.target.name} answered class {int(label_t.max())}, but it has {self.num_classes} classes")
        return (torch.cat(probs) if probs else None), label_t


class ProxyTransfer(Check):
    """Black-box transfer attack: a proxy trained on the target's answers is attacked white-box
    and its adversarial examples are replayed on the target (Papernot et al. 2017)."""

    id = CHECK_ID
    shards = True
    requires = ()
    needs_train_split = "for the transfer proxy's queries"
    headline = ("transfer_success", "proxy_agreement", "queries")
    quick_settings = {"query_budget": 96, "augment_rounds": 1, "epochs_per_round": 4,
                      "attacks": ["fgsm", "pgd"], "l2_epsilons": []}
    # "@<attack>_<budget>" per attack, "@<budget>" for the strongest attack at that budget.
    metrics = (
        "queries", "attack_queries", "proxy_agreement", "proxy_agreement_lo", "proxy_agreement_hi", "n_images",
        "transfer_success", "transfer_success_lo", "transfer_success_hi",
        *(f"{family}{part}@*" for family in ("transfer_success", "targeted_success") for part in ("", "_lo", "_hi")),
        "noise_success@*", "whitebox_gap@*",
    )
    directions = {
        "transfer_success*": "lower", "targeted_success*": "lower", "proxy_agreement*": "higher",
        # the audit's own cost and controls
        "queries": None, "attack_queries": None, "n_images": None, "noise_success@*": None, "whitebox_gap@*": None,
    }
    thresholds = (
        # The majority criterion: within the standard Linf 8/255 threat model, an attacker who
        # only sees answers must not flip most of the images the model gets right.
        Threshold("transfer_success", "max", 0.5),
        # Below this the proxy imitates the target too poorly for low transfer to mean
        # robustness; the result would be a weak attack, not a strong model.
        Threshold("proxy_agreement", "min", 0.5),
    )
    # transfer_success is a rate over the correctly answered images (n_images) held against 1/2,
    # with a 95% Wilson interval that can exclude 1/2 only from 4 images on (n > z^2 = 3.84).
    min_sample = 4
    # A proxy of a constant target learns the constant, and no example can flip a constant answer.
    constant_sensitive = True

    @dataclass
    class Settings:
        """Settings of ``transfer.proxy`` (``[tool.auditkit.checks."transfer.proxy"]``).

        Query budget: ``query_budget`` target answers train the proxy: ``seed_size``
        natural images from the train split (a ``validation_fraction`` of them held out for
        early stopping), then ``augment_rounds`` rounds of Jacobian augmentation, each
        querying at most as many new points as there are training points, reservoir-sampled
        so the budget is never exceeded. Evaluating the crafted examples costs further
        queries, reported as ``attack_queries``.

        Epsilons are numbers in pixel units or strings such as ``"8/255"``.
        """

        query_budget: int = 256
        seed_size: int = 64
        augment_rounds: int = 2
        augment_step: float = 0.1
        step_sign_period: int = 3
        use_scores: bool = True
        proxy: str = "resnet"
        proxy_width: int = 16
        epochs_per_round: int = 10
        batch_size: int = 32
        lr: float = 3e-3
        patience: int = 3
        validation_fraction: float = 0.2
        max_train_seconds: float | None = 600.0
        attacks: tuple[str, ...] = ATTACKS
        linf_epsilons: tuple[float | str, ...] = ("1/255", "2/255", "4/255", "8/255")
        l2_epsilons: tuple[float | str, ...] = (0.25, 0.5, 1.0)
        steps: int = 5
        modes: tuple[str, ...] = MODES
        noise_control: bool = True
        gate_norm: Literal["linf", "l2"] = "linf"
        gate_epsilon: float | str = "8/255"

        def __post_init__(self) -> None:
            where = f"{CHECK_ID} setting"
            for name in ("query_budget", "seed_size", "proxy_width", "epochs_per_round", "batch_size", "steps", "step_sign_period"):
                if getattr(self, name) < 1:
                    raise UsageError(f"{where} {name} must be >= 1, got {getattr(self, name)}")
            for name in ("augment_rounds", "patience"):
                if getattr(self, name) < 0:
                    raise UsageError(f"{where} {name} must be >= 0, got {getattr(self, name)}")
            if not 0 <= self.validation_fraction < 1:
                raise UsageError(f"{where} validation_fraction must be in [0, 1), got {self.validation_fraction}")
            if self.lr <= 0 or self.augment_step <= 0:
                raise UsageError(f"{where} lr and augment_step must be > 0, got {self.lr}, {self.augment_step}")
            if self.max_train_seconds is not None and self.max_train_seconds <= 0:
                raise UsageError(f"{where} max_train_seconds must be > 0 or unset, got {self.max_train_seconds}")
            unknown = [a for a in self.attacks if a not in ATTACKS]
            if unknown or not self.attacks:
                raise UsageError(f"{where} attacks={list(self.attacks)}; expected a non-empty list of {', '.join(ATTACKS)}")
            bad_modes = [m for m in self.modes if m not in MODES]
            if bad_modes or not self.modes:
                raise UsageError(f"{where} modes={list(self.modes)}; expected a non-empty list of {', '.join(MODES)}")
            self.linf_epsilons = tuple(_epsilon(where, "linf_epsilons", e) for e in self.linf_epsilons)
            self.l2_epsilons = tuple(_epsilon(where, "l2_epsilons", e) for e in self.l2_epsilons)
            self.gate_epsilon = _epsilon(where, "gate_epsilon", self.gate_epsilon)
            listed = self.linf_epsilons if self.gate_norm == "linf" else self.l2_epsilons
            if not any(math.isclose(self.gate_epsilon, e, rel_tol=1e-6) for e in listed):
                raise UsageError(
                    f"{where} gate_epsilon={threat_key(self.gate_norm, self.gate_epsilon)} is not among "
                    f"{self.gate_norm}_epsilons {[threat_key(self.gate_norm, e) for e in listed]}; the gate needs that attack"
                )
            if not any(supported(a, self.gate_norm) for a in self.attacks):
                raise UsageError(f"{where}: none of attacks={list(self.attacks)} has a {self.gate_norm} form for the gate")

        def noise_epsilons(self) -> list[tuple[str, float]]:
            """Every (norm, eps) of the random-noise control."""
            return [("linf", float(e)) for e in self.linf_epsilons] + [("l2", float(e)) for e in self.l2_epsilons]

        def configs(self) -> list[AttackConfig]:
            """Every (attack, norm, eps) to run, Linf first."""
            out = []
            for norm, epsilons in (("linf", self.linf_epsilons), ("l2", self.l2_epsilons)):
                out += [AttackConfig(a, norm, float(e)) for a in self.attacks if supported(a, norm) for e in epsilons]
            return out

        def query_plan(self, train_images: int) -> QueryPlan:
            """The training queries on a train split of ``train_images`` images: the seed set
            (cut to the budget and the split; a ``validation_fraction`` of it held out once it
            has 10 images or more), then each augmentation round's new points, as many as the
            proxy's training images, within what the budget leaves."""
            seed = min(self.seed_size, self.query_budget, train_images)
            validation = int(round(seed * self.validation_fraction)) if seed >= 10 else 0
            rounds: list[int] = []
            queried, training = seed, seed - validation
            for _ in range(self.augment_rounds):
                new = min(self.query_budget - queried, training)
                if new <= 0:
                    break
                rounds.append(new)
                queried, training = queried + new, training + new
            return QueryPlan(seed, validation, tuple(rounds))

    def run(self, ctx: AuditContext) -> Findings:
        s = self.settings
        train = ctx.data.train
        if train is None or len(train) == 0:
            skip(f"data {ctx.data.spec!r} has no train split: the proxy's queries come from it, never from the evaluation images")
        clean = ctx.clean  # first: the shared clean pass's queries are the session's, not this check's
        has_labels = clean.labels is not None
        base_mask = clean.correct if has_labels else torch.ones_like(clean.preds, dtype=torch.bool)
        if not bool(base_mask.any()):
            skip(f"{ctx.target.name} classifies none of the {len(clean)} evaluation images correctly: there is no right answer to flip")

        scores_width = clean.num_classes
        num_classes = max(ctx.data.num_classes, scores_width or 0, getattr(ctx.target, "num_classes", None) or 0)
        oracle = Oracle(ctx.target, ctx.batch_size, num_classes)
        use_scores = s.use_scores and oracle.gives_scores

        # 1-3. the proxy, trained once (on rank 0 of a sharded audit, then sent to the others)
        world = ctx.world
        trained = self._train(ctx, oracle, num_classes, use_scores) if world.is_main else None
        proxy, log, training_queries, rounds_done, seed_n, n_val = self._receive(ctx, world, trained, num_classes)

        # 4-5. agreement on the held-out evaluation images, then transfer from the proxy (each
        # process its own batches, the counts summed)
        before = oracle.count
        outcome = self._attack(ctx, proxy, oracle, clean, base_mask)
        attack_queries = world.all_sum(oracle.count - before)
        return self._findings(ctx, outcome, log, training_queries, attack_queries, rounds_done, use_scores, seed_n, n_val)

    def _train(self, ctx: AuditContext, oracle: Oracle, num_classes: int, use_scores: bool) -> dict[str, Any]:
        """Steps 1-3: query the seed set, train the proxy, grow the query set by Jacobian
        augmentation between rounds. Returns the proxy and what the report says of its training."""
        s = self.settings
        train = ctx.data.train
        generator = ctx.generator
        deadline = None if s.max_train_seconds is None else time.monotonic() + s.max_train_seconds

        # 1. the seed set: natural images from the train split, queried once
        plan = s.query_plan(len(train))
        seed_n, n_val = plan.seed, plan.validation
        order = torch.randperm(len(train), generator=generator)[:seed_n].tolist()
        seed_images = torch.cat([b.images for b in ctx.data.batches("train", ctx.batch_size, indices=order)]).to(ctx.device)
        seed_probs, seed_labels = oracle(seed_images)
        val_images, val_labels = seed_images[:n_val], seed_labels[:n_val]
        images, labels = seed_images[n_val:], seed_labels[n_val:]
        targets = seed_probs[n_val:] if use_scores else labels

        # 2-3. train the proxy; grow the query set by Jacobian augmentation between rounds
        torch.manual_seed(ctx.seed)  # the proxy's initial weights
        proxy = build_proxy(s.proxy, num_classes, tuple(seed_images.shape[1:]), width=s.proxy_width, device=ctx.device)
        require_input_gradient(proxy, seed_images, s.proxy)
        plan = TrainingPlan(epochs=s.epochs_per_round, batch_size=s.batch_size, lr=s.lr, patience=s.patience, deadline=deadline)
        log = TrainingLog()
        optimizer = None
        rounds_done = 0
        for round_index in range(s.augment_rounds + 1):
            optimizer, log = train_proxy(
                proxy, images, targets, plan, val_images=val_images, val_labels=val_labels,
                generator=generator, optimizer=optimizer, log=log, progress=ctx.progress,
            )
            remaining = s.query_budget - oracle.count
            if round_index == s.augment_rounds or remaining <= 0 or log.stopped[-1] == "time":
                break
            # Papernot et al.'s periodic step size: lambda changes sign every tau rounds.
            step = s.augment_step * (-1) ** (round_index // s.step_sign_period)
            new = jacobian_augmentation(proxy, images, labels, step, min(remaining, int(images.shape[0])), batch_size=s.batch_size, generator=generator)
            if new is None:
                break
            new_probs, new_labels = oracle(new)
            images = torch.cat([images, new])
            labels = torch.cat([labels, new_labels])
            targets = torch.cat([targets, new_probs]) if use_scores else labels
            rounds_done += 1
        training_queries = oracle.count
        for p in proxy.parameters():
            p.requires_grad_(False)  # attacks need input gradients only
        return {"proxy": proxy, "log": log, "training_queries": training_queries, "rounds": rounds_done,
                "seed_n": seed_n, "n_val": n_val}

    def _receive(
        self, ctx: AuditContext, world: Any, trained: dict[str, Any] | None, num_classes: int
    ) -> tuple[torch.nn.Module, Any, int, int, int, int]:
        """The proxy :meth:`_train` made, on every process: rank 0's own, and on the others the
        same network built afresh with rank 0's weights (one process: ``trained`` as it is)."""
        s = self.settings
        if world.distributed:
            sent = world.broadcast(None if trained is None else {
                **{k: v for k, v in trained.items() if k != "proxy"},
                "state": trained["proxy"].state_dict(), "training": trained["proxy"].training,
            })
            if trained is None:
                proxy = build_proxy(s.proxy, num_classes, tuple(ctx.data.image_shape), width=s.proxy_width,
                                    device=ctx.device)
                proxy.load_state_dict(sent["state"])
                proxy.train(sent["training"])
                for p in proxy.parameters():
                    p.requires_grad_(False)
                trained = {**sent, "proxy": proxy}
        assert trained is not None
        return (trained["proxy"], trained["log"], trained["training_queries"], trained["rounds"], trained["seed_n"],
                trained["n_val"])

    def estimate(self, ctx: AuditContext) -> Cost:
        """The target's queries (forward passes): the training queries of
        :meth:`Settings.query_plan`, then, per correctly answered evaluation image (every
        image without labels), one per attack configuration and mode and one per noise
        budget. The proxy's own passes are in the note (:meth:`proxy_passes`). An upper
        bound only when the time cap stops training before an augmentation round (its
        queries are then not made); exact otherwise."""
        s = self.settings
        train = ctx.data.train
        if train is None or len(train) == 0:
            return Cost()  # the run skips before any query
        clean = ctx.clean
        n_base = int((clean.correct if clean.labels is not None else torch.ones_like(clean.preds, dtype=torch.bool)).sum())
        if n_base == 0:
            return Cost()
        plan = s.query_plan(len(train))
        per_image = len(s.configs()) * len(s.modes) + (len(s.noise_epsilons()) if s.noise_control else 0)
        proxy = self.proxy_passes(plan, len(clean), n_base)
        return Cost(forward=plan.queries + n_base * per_image, note=proxy.describe())

    def proxy_passes(self, plan: QueryPlan, n_eval: int, n_base: int) -> ProxyPasses:
        """The proxy's image passes for ``plan``, ``n_eval`` evaluation images and ``n_base``
        attacked ones, counting every epoch of every round (no early stop)."""
        s = self.settings
        sizes = plan.training_sizes()
        # a training batch of one image is skipped (batch norm cannot train on it) unless it is all there is
        training = s.epochs_per_round * sum(n - (1 if n >= 2 and n % s.batch_size == 1 else 0) for n in sizes)
        validation = s.epochs_per_round * len(sizes) * plan.validation
        configs = s.configs()
        if attacks.REUSE:
            shared = 1 if any(c.attack in FROM_CLEAN for c in configs) else 0
            steps = {"fgsm": 0, "mifgsm": s.steps - 1, "pgd": s.steps}
        else:
            shared, steps = 0, {"fgsm": 1, "mifgsm": s.steps, "pgd": s.steps}
        per_mode = shared + sum(steps[c.attack] for c in configs)
        # 1 image for the gradient probe, every training image in each augmentation round
        input_gradient = 1 + sum(sizes[: len(plan.augmentation)]) + n_base * len(s.modes) * per_mode
        forward = validation + n_eval + n_base * len(configs) * len(s.modes)
        return ProxyPasses(training, input_gradient, forward)

    # -- attacking ----------------------------------------------------------------------------

    def _attack(self, ctx: AuditContext, proxy: torch.nn.Module, oracle: Oracle, clean: Any, base_mask: torch.Tensor) -> dict[str, Any]:
        s = self.settings
        measurement = TransferMeasurement(
            proxy, oracle, s.configs(), modes=s.modes, steps=s.steps,
            noise=s.noise_epsilons() if s.noise_control else (), generator=ctx.generator,
        )
        agree = 0
        data_classes = ctx.data.num_classes
        for batch in ctx.progress(ctx.batches("eval"), total=ctx.n_batches(), desc="transfer attacks"):
            rows = batch.index.to(clean.preds.device)
            target_pred = clean.preds[rows]
            with torch.no_grad():
                agree += int((proxy(batch.images).argmax(1) == target_pred).sum())
            keep = base_mask[rows]
            if bool(keep.any()):
                reference = target_pred[keep]
                measurement.add(batch.images[keep], reference, random_other_class(reference, data_classes, ctx.generator))
        # every process's batches (one process: its own), summed
        world = ctx.world
        counts: dict[tuple[str, str], list[int]] = {}
        for part in world.all_gather(measurement.counts):
            for key, entry in part.items():
                counts[key] = [a + b for a, b in zip(counts.get(key, [0, 0, 0]), entry)]
        return {"counts": counts, "agree": world.all_sum(agree), "n_eval": len(clean),
                "n_base": world.all_sum(measurement.n_images)}

    # -- reporting ----------------------------------------------------------------------------

    def _findings(
        self, ctx: AuditContext, outcome: dict[str, Any], log: TrainingLog, training_queries: int, attack_queries: int,
        rounds_done: int, use_scores: bool, seed_n: int, n_val: int,
    ) -> Findings:
        s = self.settings
        counts = outcome["counts"]
        n_eval, n_base = outcome["n_eval"], outcome["n_base"]
        agreement = outcome["agree"] / n_eval
        lo, hi = wilson_interval(outcome["agree"], n_eval)
        metrics: dict[str, float] = {
            "queries": float(training_queries),
            "attack_queries": float(attack_queries),
            "proxy_agreement": agreement,
            "proxy_agreement_lo": lo,
            "proxy_agreement_hi": hi,
            "n_images": float(n_base),
        }
        table = []
        for (family, key), (hits, proxy_hits, n) in counts.items():
            rate = hits / n
            lo, hi = wilson_interval(hits, n)
            metrics[f"{family}@{key}"] = rate
            if family != "noise_success":
                metrics[f"{family}_lo@{key}"] = lo
                metrics[f"{family}_hi@{key}"] = hi
            row = {"family": family, "config": key, "successes": hits, "n": n, "rate": rate, "lo": lo, "hi": hi}
            if family != "noise_success":
                row["proxy_success"] = proxy_hits / n
            table.append(row)

        # The strongest attack at each budget: what an attacker would pick, and what
        # whitebox.masking compares with white-box PGD (transfer_success@<budget>).
        strongest: dict[str, str] = {}
        for norm, eps in s.noise_epsilons():
            budget = threat_key(norm, eps)
            tried = [(metrics[f"transfer_success@{a}_{budget}"], a) for a in s.attacks if f"transfer_success@{a}_{budget}" in metrics]
            if not tried:
                continue
            _, best = max(tried, key=lambda pair: (pair[0], -s.attacks.index(pair[1])))
            strongest[budget] = best
            for suffix in ("", "_lo", "_hi"):
                metrics[f"transfer_success{suffix}@{budget}"] = metrics[f"transfer_success{suffix}@{best}_{budget}"]
        gate_key = threat_key(s.gate_norm, s.gate_epsilon)
        attack = strongest.get(gate_key)
        if attack is not None:
            for suffix in ("", "_lo", "_hi"):
                metrics[f"transfer_success{suffix}"] = metrics[f"transfer_success{suffix}@{gate_key}"]

        untargeted = {c: metrics[f"transfer_success@{c.key}"] for c in s.configs() if f"transfer_success@{c.key}" in metrics}
        gaps, gap_sources = whitebox_gaps(ctx.results, ctx.target.name, untargeted)
        metrics.update(gaps)

        noise_rate = metrics.get(f"noise_success@{gate_key}")
        parts = [f"proxy agrees with {ctx.target.name} on {agreement:.0%} of {n_eval} held-out images after {training_queries} queries"]
        if attack is not None:
            parts.append(
                f"{attack.upper()} {gate_key.replace('_', ' ')} crafted on the proxy flips {metrics['transfer_success']:.0%} "
                f"of {n_base} correctly answered images (95% CI {metrics['transfer_success_lo']:.0%}-{metrics['transfer_success_hi']:.0%})"
                + (f"; random noise of that size flips {noise_rate:.0%}" if noise_rate is not None else "")
            )
        time_capped = "time" in log.stopped
        if time_capped:
            capped = (
                f"proxy training stopped at its safety cap max_train_seconds={s.max_train_seconds:g} before its step "
                "budget: these numbers depend on machine speed (raise or unset the cap to make them reproducible)"
            )
            parts.append(capped)
            # also a warning: the terminal and the report's warnings say it, not only this result's message
            warnings.warn(f"transfer.proxy on {ctx.target.name}: {capped}", stacklevel=2)
        artifacts = [
            Artifact(
                name="proxy_validation_agreement",
                kind="curve",
                data={"x": list(range(1, len(log.val_agreement) + 1)), "y": list(log.val_agreement), "label": "proxy validation agreement per epoch"},
                caption="Agreement of the proxy with the target on held-out seed images after each training epoch",
            )
        ]
        details = {
            "table": table,
            "training": {
                "proxy": s.proxy,
                "trained_on": "scores" if use_scores else "labels",
                "seed_images": seed_n,
                "validation_images": n_val,
                "training_images": training_queries - n_val,
                "augmentation_rounds": rounds_done,
                "epochs": log.epochs,
                "stopped": log.stopped,
                "time_cap_bound": time_capped,
                "seconds": round(log.seconds, 3),
                "images_per_second": round(log.images_per_second, 1) if log.seconds > 0 else None,
            },
            "gate": {"norm": s.gate_norm, "epsilon": s.gate_epsilon, "attack": attack},
            "strongest_attack": strongest,
            "whitebox_sources": gap_sources or (
                "no whitebox.fgsm/whitebox.pgd results for this model yet: by default they run after transfer.proxy"
            ),
        }
        return Findings(metrics=metrics, message="; ".join(parts), artifacts=artifacts, details=details,
                        curves=_curves(counts, s, strongest))


def _curves(counts: dict[tuple[str, str], list[int]], s: Any, strongest: dict[str, str]) -> list[Curve]:
    """Untargeted transfer success against epsilon per norm: the strongest attack at each budget
    (the ``transfer_success@<budget>`` metrics), each attack on its own (variant: the attack),
    and the random-noise control (``noise_success``), with 95% Wilson intervals."""
    curves = []
    for norm, epsilons in (("linf", s.linf_epsilons), ("l2", s.l2_epsilons)):
        series = [("transfer_success", "", "strongest attack (transfer)")]
        series += [("transfer_success", a, f"{a.upper()} (transfer)") for a in s.attacks if supported(a, norm)]
        series.append(("noise_success", "", "random noise"))
        for family, variant, label in series:
            points = []
            for eps in epsilons:
                budget = threat_key(norm, float(eps))
                if family == "transfer_success" and not variant:
                    key = f"{strongest[budget]}_{budget}" if budget in strongest else None
                else:
                    key = budget if family == "noise_success" else AttackConfig(variant, norm, float(eps)).key
                if key is None or (family, key) not in counts:
                    continue
                hits, _, n = counts[(family, key)]
                lo, hi = wilson_interval(hits, n)
                points.append(CurvePoint(float(eps), hits / n, lo, hi))
            if points:
                curves.append(Curve(
                    name="_".join(part for part in (family, variant, norm) if part), metric=family, norm=norm,
                    variant=variant, points=tuple(points), label=f"{label}, {norm}", x_label="epsilon",
                    y_label="share of correctly answered images flipped",
                    caption=f"Share of correctly answered images flipped vs {norm} epsilon, with 95% Wilson intervals",
                ))
    return curves


def whitebox_gaps(
    results: list[Any], model: str, transfer: dict[AttackConfig, float]
) -> tuple[dict[str, float], dict[str, str]]:
    """``whitebox_gap@<attack>_<budget>`` = white-box attack success minus transfer success,
    for each untargeted transfer success rate in ``transfer`` (by attack configuration) whose
    attack, norm and epsilon this model's ``whitebox.<attack>`` results also measured.

    White-box success is read from the robust accuracy curves of those results (passed or
    failed; ``Curve`` with metric ``robust_acc``, its ``norm``, a point per epsilon), not from
    metric names: it is the share of the correctly classified images that the attack flipped,
    ``(n_attacked - robust_acc * n_images) / n_attacked`` with the result's ``n_images`` and
    ``n_attacked``, which is the white-box check's own ``attack_success@<budget>``. The attack
    is the curve's ``variant``, or the check's name after ``whitebox.``; epsilons match within
    a relative 1e-6. Returns the gaps and, for each, the white-box number it came from, named
    as the metric that curve point is also reported as (``whitebox.pgd:robust_acc@linf_8/255``).
    """
    found: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    for result in results:
        if result.model != model or not result.check.startswith("whitebox.") or result.outcome.value not in ("passed", "failed"):
            continue
        n_images, n_attacked = result.metrics.get("n_images"), result.metrics.get("n_attacked")
        if not (n_images and n_attacked):
            continue  # nothing was attacked: no share of flipped images to compare
        for curve in result.curves:
            if curve.metric != "robust_acc" or curve.norm not in NORMS:
                continue
            attack = curve.variant or result.check.split(".", 1)[1]
            for point in curve.points:
                if math.isfinite(point.value):
                    # robust_acc * n_images is a count of images: rounded, the share is exact
                    success = round(n_attacked - point.value * n_images) / n_attacked
                    source = f"{result.check}:{curve.metric}@{threat_key(curve.norm, point.x)}"
                    found.setdefault((attack, curve.norm), []).append((point.x, success, source))
    gaps, sources = {}, {}
    for config, rate in transfer.items():
        for eps, success, source in found.get((config.attack, config.norm), ()):
            if math.isclose(eps, config.eps, rel_tol=1e-6):
                key = f"whitebox_gap@{config.key}"
                gaps[key] = success - rate
                sources[key] = source
    return gaps, sources


def _epsilon(where: str, name: str, value: Any) -> float:
    try:
        eps = float(Fraction(value)) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{where} {name}: {value!r} is not a number or a fraction like '8/255'") from None
    if not eps > 0:
        raise UsageError(f"{where} {name}: epsilon must be > 0, got {value!r}")
    return eps
