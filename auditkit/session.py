"""AuditSession: run every check on the target and each baseline, each inside a guard, and
keep the results. Owns the shared clean forward pass and the session's device.

The session's collaborators live in their own modules and are re-exported here for code that
imports them from ``auditkit.session``: :mod:`auditkit.context` (``AuditContext``,
``CleanPass``), :mod:`auditkit.device`, :mod:`auditkit.progress`, :mod:`auditkit.seeding`,
:mod:`auditkit.results` (``AuditRun``), :mod:`auditkit.environment`, and ``ExitCode``."""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from typing import Any, Iterable, Sequence

import torch

from auditkit.batching import oom_backoff
from auditkit.check import GRADIENT_PASS_FORWARDS, Check, CheckResult, Cost, Outcome, Skipped
from auditkit.config import Config
from auditkit.context import AuditContext, CleanPass
from auditkit.data.base import AuditData
from auditkit.device import describe_device, resolve_device
from auditkit.distributed import SINGLE, World
from auditkit.environment import environment
from auditkit.errors import ExitCode, TargetError
from auditkit.progress import progress_bar
from auditkit.records import ImageRows
from auditkit.results import AuditRun
from auditkit.seeding import check_seed, preserved_random_state, seed_everything

__all__ = [
    "AuditContext", "AuditRun", "AuditSession", "CleanPass", "ExitCode", "check_seed", "describe_device",
    "environment", "preserved_random_state", "progress_bar", "resolve_device", "seed_everything",
]

# A check whose estimated cost (Check.estimate) comes to at least this many seconds at the
# model's clean-pass rate is announced on the terminal before it runs.
ANNOUNCE_COST_AFTER_S = 10.0


class AuditSession:
    """One audit: the data, the target and baselines, the checks, and their results."""

    def __init__(
        self,
        config: Config,
        pluginmanager: Any,
        *,
        data: AuditData,
        target: Any,
        baselines: Sequence[Any] = (),
        device: torch.device | None = None,
        world: World = SINGLE,
    ):
        self.config = config
        self.world = world
        self.pm = pluginmanager
        self.hook = pluginmanager.hook
        self.data = data
        self.target = target
        self.baselines = list(baselines)
        self.device: torch.device = target.device if device is None else device
        self.n_eval = len(data.eval) if config.max_images is None else min(config.max_images, len(data.eval))
        self.results: list[CheckResult] = []
        self.checks: list[Check] = []
        self.models: list[dict[str, Any]] = []
        self.start = time.time()
        self.duration_s = 0.0
        self.interrupted = False
        self.exitstatus = ExitCode.OK
        self._clean: dict[str, CleanPass | TargetError] = {}
        self._clean_rate: dict[str, float] = {}  # per model: measured seconds per image of its clean pass
        self._shared: dict[str, dict[Any, Any]] = {}  # per model: AuditContext.shared's values
        self.report: dict[str, Any] | None = None
        self.written: list[tuple[str, str]] = []  # (what, path) for the terminal summary
        self.not_written: list[str] = []  # one line per output that could not be written
        self.regressions: list[Any] = []  # auditkit.compare.Regression, with --compare
        self.warnings: list[str] = []  # what the report should say beside the results (weak or missing baselines)

    @property
    def all_targets(self) -> list[Any]:
        """Baselines first, so the target's relative thresholds can compare with them."""
        return [*self.baselines, self.target]

    # -- progress --------------------------------------------------------------------------

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "", sharded: bool = False) -> Iterable:
        """``iterable`` with progress output (:func:`~auditkit.progress.progress_bar`). Under
        torchrun only rank 0 shows it; ``sharded`` says the loop is rank 0's share of the batches,
        and the bar says so, with its total that share."""
        if sharded and self.world.distributed:
            desc = f"{desc} (rank 0's share, 1 of {self.world.size} processes)"
        return progress_bar(self.config)(iterable, total=total, desc=desc)

    # -- clean pass --------------------------------------------------------------------------

    def clean_pass(self, target: Any) -> CleanPass:
        cached = self._clean.get(target.name)
        if isinstance(cached, TargetError):
            raise cached
        if cached is not None:
            return cached
        try:
            result = self._compute_clean_pass(target)
        except TargetError as exc:
            self._clean[target.name] = exc
            raise
        self._clean[target.name] = result
        return result

    def constant_predictions(self, target: Any) -> tuple[int, int] | None:
        """``(class, n_images)`` when ``target`` predicts one class for all ``n_images`` (>= 2)
        evaluation images, from the shared clean pass (computed here only if no check has
        yet); None otherwise, and None when the clean pass cannot be computed (that check's
        own result says why)."""
        try:
            return self.clean_pass(target).constant
        except Exception:  # noqa: BLE001 - a model that fails its clean pass is the checks' to report
            return None

    @torch.no_grad()
    def _compute_clean_pass(self, target: Any) -> CleanPass:
        """The clean pass, streamed: each batch's answers go to a per-image record
        (:class:`~auditkit.records.ImageRows`, in memory up to its limit, else in a temporary
        file), so that nothing here grows with the images but the predictions and labels
        (8 bytes an image each)."""
        model_s = 0.0  # the model's time alone, not reading and decoding the images
        world, size, n = self.world, self.config.batch_size, self.n_eval
        n_batches = world.n_batches(-(-n // size))
        if world.distributed:  # this process's batches; the others' are gathered below
            from auditkit.distributed import owned_indices

            batches = self.data.batches("eval", size, indices=owned_indices(world, n, size))
        else:
            batches = self.data.batches("eval", size, limit=n)
        labels_only = getattr(target, "returns", "scores") == "labels" and not target.white_box
        record = _CleanRecord(n, self.device, labels_only)
        failure: str | None = None
        try:
            desc = f"{target.name} clean forward pass"
            for batch in self.progress(batches, total=n_batches, desc=desc, sharded=True):
                images = batch.images.to(self.device)
                start = time.perf_counter()
                out = oom_backoff(target.query if not target.white_box else target, images)
                if out.device.type == "cuda":
                    torch.cuda.synchronize(out.device)
                model_s += time.perf_counter() - start
                record.add(batch.index, out, batch.labels)
        except Exception as exc:  # noqa: BLE001 - told to the other processes, which wait to gather
            if not world.distributed:
                raise
            failure = str(exc) if isinstance(exc, TargetError) else f"{target.name}: {type(exc).__name__}: {exc}"
        if record.own_rows:
            # only the cost announcement reads it (a time shown, never a result)
            self._clean_rate[target.name] = model_s / record.own_rows
        if world.distributed:
            record.gather(world, failure)
        label_t = record.labels if record.labelled else None
        if labels_only:
            return CleanPass(None, record.preds, label_t, score_kind=None)
        if record.n_bad:
            raise TargetError(
                f"{target.name} produced non-finite scores (NaN or inf) for {record.n_bad} of "
                f"{n} images (first: image {record.first_bad}); expected finite scores"
            )
        kind = "logits" if target.white_box else "probabilities"
        return CleanPass(record.answers, record.preds, label_t, score_kind=kind)

    # -- running -----------------------------------------------------------------------------

    def missing_requirements(self, check: Check, target: Any) -> list[str]:
        available = set(target.capabilities) | set(self.data.capabilities)
        return [r for r in check.requires if r not in available]

    def run(self, checks: Sequence[Check]) -> int:
        """Run ``checks`` on each baseline, then on the target. Returns the exit code."""
        self.checks = list(checks)
        try:
            for target in self.all_targets:
                self._run_model(target)
        except KeyboardInterrupt:
            self.interrupted = True
        self.duration_s = time.time() - self.start
        self.exitstatus = self.compute_exitstatus()
        return self.exitstatus

    def _run_model(self, target: Any) -> None:
        try:
            with target:
                if self.world.distributed:
                    # every process at once: the pass is sharded and gathered (its errors are
                    # the checks' to report, as with one process)
                    with contextlib.suppress(TargetError):
                        self.clean_pass(target)
                for check in self.checks:
                    self.run_one(check, target)
        finally:
            # What the checks shared for this model (Grad-CAM maps, gradients) is not needed
            # by the next model: free it (device memory) before that one runs.
            self._shared.pop(target.name, None)

    def run_one(self, check: Check, target: Any) -> CheckResult:
        world = self.world
        if not world.distributed:
            result = self._run_guarded(check, target)
        else:
            # A check that shards runs on every process and merges; any other runs once, on
            # rank 0. Every process keeps rank 0's result (a failure on another process before
            # the merges is an error there too: auditkit.distributed.PeerFailed).
            mine = self._run_guarded(check, target) if check.shards or world.is_main else None
            failure = mine.message if mine is not None and mine.outcome is Outcome.ERROR else None
            result, failures = world.finish(mine, failure)
            late = [f"process {rank} failed after the merges: {what}" for rank, what in failures if rank != 0]
            if late and result.outcome is not Outcome.ERROR:
                result = dataclasses.replace(result, message=f"{result.message}; {'; '.join(late)}")
        self.results.append(result)
        self.hook.auditkit_log_result(result=result)
        return result

    def _run_guarded(self, check: Check, target: Any) -> CheckResult:
        missing = self.missing_requirements(check, target)
        ctx = AuditContext(self, target, check)
        if missing:
            result = CheckResult(
                check=check.id,
                model=target.name,
                role=target.role,
                outcome=Outcome.SKIPPED,
                message=_missing_reason(missing, target),
                headline=check.headline,
            )
        else:
            # The estimate is the whole audit's, for rank 0's terminal and report (every process
            # keeps rank 0's result): the other processes skip it and the data it may read.
            cost = self._announce_cost(check, ctx) if self.world.is_main else None
            seed_everything(ctx.seed)
            findings, excinfo = None, None
            t0 = time.perf_counter()
            try:
                findings = self.hook.auditkit_run_check(check=check, ctx=ctx)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # the guard: a crashing check is data, not an abort
                excinfo = exc
            duration = time.perf_counter() - t0
            result = self.hook.auditkit_make_result(
                check=check, ctx=ctx, findings=findings, excinfo=excinfo, duration_s=duration
            )
            if cost is not None:
                result = dataclasses.replace(result, details={**result.details, "estimated_cost": cost.to_json()})
        return result

    def _announce_cost(self, check: Check, ctx: AuditContext) -> Cost | None:
        """The check's own estimate of its cost (``Check.estimate``), announced on the terminal
        when it comes to ``ANNOUNCE_COST_AFTER_S`` or more at the model's clean-pass rate. An
        estimate that fails is no estimate: the check still runs and reports its own errors."""
        try:
            cost = check.estimate(ctx)
        except KeyboardInterrupt:
            raise
        except Skipped:  # the run will say why it skips
            return None
        except BaseException as exc:  # noqa: BLE001 - an estimate never stops a check
            warnings.warn(
                f"{check.id} on {ctx.target.name}: its cost estimate (Check.estimate) failed, "
                f"{type(exc).__name__}: {exc}; the check runs without one", UserWarning, stacklevel=2,
            )
            return None
        if cost is None:
            return None
        if not isinstance(cost, Cost):
            warnings.warn(
                f"{check.id}: Check.estimate returned {type(cost).__name__}, expected auditkit.Cost or None; "
                "the check runs without an estimate", UserWarning, stacklevel=2,
            )
            return None
        with contextlib.suppress(Exception):  # the rate comes from the clean pass, shared and computed once
            self.clean_pass(ctx.target)
        rate = self._clean_rate.get(ctx.target.name)
        if rate is not None and cost.forward_equivalents * rate >= ANNOUNCE_COST_AFTER_S:
            seconds = cost.forward_equivalents * rate
            counted = f", a forward+backward counted as {GRADIENT_PASS_FORWARDS:g}" if cost.gradient else ""
            ctx.announce(
                f"{'at most' if cost.maximum else 'about'} {cost.describe()}; {'up to ' if cost.maximum else ''}"
                f"~{_duration(seconds)} at this model's clean-pass rate ({rate * 1e3:.2g} ms an image{counted})"
            )
        return cost

    def compute_exitstatus(self) -> int:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if not self.checks:
            return ExitCode.NO_CHECKS_COLLECTED
        gating = [r for r in self.results if r.role == "target"]
        if any(r.outcome in (Outcome.FAILED, Outcome.ERROR) for r in gating):
            return ExitCode.CHECKS_FAILED
        return ExitCode.OK

    def weak_baselines(self) -> list[Any]:
        """The baselines whose training left them no better than chance (``info["quality"]``,
        set by :mod:`auditkit.baselines`): comparisons against them say little."""
        return [b for b in self.baselines if ((getattr(b, "info", None) or {}).get("quality") or {}).get("weak")]

    def counts(self) -> dict[str, int]:
        counts = {o.value: 0 for o in Outcome}
        for r in self.results:
            if r.role == "target":
                counts[r.outcome.value] += 1
        return counts

    def finish(self) -> None:
        """Write the reports and print the summary (the ``auditkit_session_finish`` hook).

        Each implementation runs on its own, the JSON report first and the terminal summary
        last, so one output that fails costs no other its file; the failures are listed in
        ``not_written`` (shown in the summary) and turn an exit code 0 into 4 (the path or the
        disk was the problem) or 3 (a writer crashed). The JSON report's ``summary.exit_code``
        is the audit's verdict, decided before anything was written. The report dict
        (``self.report``) is built once, here, before any writer runs: every writer reads that
        same dict (one ``created`` time for the JSON and the scorecard)."""
        from auditkit.outputs import call_writers, describe_failure
        from auditkit.reporters.json_report import build_report

        self.duration_s = time.time() - self.start
        self.report = build_report(self)
        hook = self.hook.auditkit_session_finish
        if any(getattr(i, "hookwrapper", False) or getattr(i, "wrapper", False) for i in hook.get_hookimpls()):
            hook(session=self, exitstatus=self.exitstatus)  # a plugin wraps the writers: let pluggy run them
            return
        terminal = [i for i in hook.get_hookimpls() if i.plugin_name == "terminalreporter"]
        failures = []
        for plugin, exc in call_writers(hook, session=self, exitstatus=self.exitstatus, skip=terminal):
            self.not_written.append(describe_failure(plugin, exc, self.config))
            failures.append(exc)
        if failures and self.exitstatus == ExitCode.OK:
            self.exitstatus = ExitCode.USAGE_ERROR if all(isinstance(e, OSError) for e in failures) else ExitCode.INTERNAL_ERROR
        for impl in terminal:
            impl.function(session=self, exitstatus=self.exitstatus)


def _duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"`` or ``"1.5 h"``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _missing_reason(missing: list[str], target: Any) -> str:
    from auditkit.target import NO_INPUT_GRADIENT

    no_gap_head = "the model has no global-average-pooling + single linear head"
    gap_head_reason = getattr(target, "gap_head_reason", None)
    reasons = {
        "white_box": (
            NO_INPUT_GRADIENT
            if getattr(target, "white_box", False) and not getattr(target, "input_gradient", True)
            else "the model is a black box (no gradients)"
        ),
        "layers": "the model has no hookable layers (TorchScript, torch.export or black box)",
        "gap_head": f"{no_gap_head}: {gap_head_reason}" if gap_head_reason else no_gap_head,
        "scores": "the model returns labels only, not scores",
        "labels": "the data has no labels",
        "localization": "the data has no boxes or masks",
    }
    return "; ".join(reasons.get(m, f"requires {m!r}") for m in missing)


class _CleanRecord:
    """What the clean pass keeps while it streams: the answers per image (a per-image record),
    the predictions and labels, and the count of images with non-finite scores.

    Under torchrun each process adds its own batches, then :meth:`gather` exchanges them one
    round at a time (each process's r-th batch in round r), so that no process ever holds
    more than one batch of every process beyond its record."""

    def __init__(self, n: int, device: torch.device, labels_only: bool):
        self.n, self.device, self.labels_only = n, device, labels_only
        self.answers = ImageRows(n, device)
        self.preds = torch.zeros(n, dtype=torch.long, device=device)
        self.labels = torch.zeros(n, dtype=torch.long, device=device)
        self.labelled = True  # every batch came with labels
        self.n_bad, self.first_bad = 0, n  # images with a non-finite score, and the first of them
        self.own: list[torch.Tensor] = []  # this process's batches' positions
        self.own_rows = 0

    def add(self, index: torch.Tensor, out: torch.Tensor, labels: torch.Tensor | None) -> None:
        index = index.to(self.device)
        self.own.append(index)
        self.own_rows += int(index.shape[0])
        self._store(index, out, labels)

    def _store(self, index: torch.Tensor, out: torch.Tensor, labels: torch.Tensor | None) -> None:
        index, out = index.to(self.device), out.to(self.device)  # another process's rows arrive on the CPU
        if self.labels_only:
            self.preds[index] = out.long().reshape(-1)
        else:
            self.answers.write(index, out)
            self.preds[index] = out.argmax(dim=1)
            bad = ~torch.isfinite(out).all(dim=1)
            if bool(bad.any()):
                self.n_bad += int(bad.sum())
                self.first_bad = min(self.first_bad, int(index[bad].min()))
        if labels is None:
            self.labelled = False
        else:
            self.labels[index] = labels.to(self.device)

    def gather(self, world: World, failure: str | None) -> None:
        """Every process's batches into this one's record; a model that failed on any process
        fails on all, with the first failure's words.

        :raises TargetError: the model failed on some process."""
        parts = world.all_gather((failure, len(self.own)))
        failures = [f for f, _ in parts if f is not None]
        if failures:
            raise TargetError(failures[0])
        for r in range(max(count for _, count in parts)):
            mine = None
            if r < len(self.own):
                index = self.own[r]
                answers = self.preds[index] if self.labels_only else self.answers.read(index)
                mine = (index, answers, self.labels[index] if self.labelled else None)
            for rank, theirs in enumerate(world.all_gather(mine)):
                if theirs is not None and rank != world.rank:
                    self._store(*theirs)
        self.labelled = all(world.all_gather(self.labelled))
