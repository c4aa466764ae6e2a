"""AuditSession: load -> collect -> run every check on the target and each baseline -> report.
Owns the device, the seeds, the shared clean forward pass and the guard around each check."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from auditkit.batching import oom_backoff
from auditkit.check import Check, CheckResult, Outcome
from auditkit.config import Config
from auditkit.data.base import AuditData, Batch
from auditkit.errors import ExitCode, TargetError, UsageError  # noqa: F401  (ExitCode re-exported)

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.target import BlackBoxTarget, Target

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda[:N]`` must exist; ``cpu`` always works."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda[:N]") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return dev


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


class CleanPass:
    """The clean forward pass over the evaluation images, computed once per model and shared
    by every check. ``logits`` is [N,K] on the device (for a black box that returns scores,
    its scores, which are already probabilities: ``probabilities`` is then True; None for one
    that returns labels); ``preds`` [N]; ``labels`` [N] or None."""

    def __init__(
        self, logits: torch.Tensor | None, preds: torch.Tensor, labels: torch.Tensor | None, probabilities: bool = False
    ):
        self.logits = logits
        self.preds = preds
        self.labels = labels
        self.probabilities = probabilities
        self._constant: tuple[int, int] | None | bool = False  # False: not worked out yet

    @property
    def probs(self) -> torch.Tensor:
        if self.logits is None:
            raise TargetError("this target returns labels only: no scores")
        return self.logits.float() if self.probabilities else torch.softmax(self.logits.float(), dim=1)

    @property
    def correct(self) -> torch.Tensor:
        if self.labels is None:
            raise TargetError("the data has no labels")
        return self.preds == self.labels

    def __len__(self) -> int:
        return int(self.preds.shape[0])

    @property
    def constant(self) -> tuple[int, int] | None:
        """``(class, n_images)`` when the model predicts one class for every one of the
        ``n_images`` >= 2 evaluation images, else None. Not when every label is that class
        too: a model right on every image of one-class data predicts one class as well, and
        the clean pass cannot tell it from a constant one. Worked out once and kept: every
        result of this model asks."""
        if self._constant is False:
            n = len(self)
            first = self.preds[:1]
            constant = n >= 2 and bool((self.preds == first).all())
            if constant and self.labels is not None and bool((self.labels == first).all()):
                constant = False
            self._constant = (int(first), n) if constant else None
        return self._constant  # type: ignore[return-value]


class AuditContext:
    """What a check may use while it runs on one model.

    :ivar target: the model under audit (``Target`` or ``BlackBoxTarget``), in eval mode on
        :attr:`device`. Its ``role`` is "target" or "baseline".
    :ivar data: the ``AuditData``; :meth:`batches` yields it on the device.
    :ivar settings: the check's settings (its ``Settings`` dataclass, config applied).
    :ivar generator: a ``torch.Generator`` on the CPU seeded for this check and model.
    :ivar results: results so far in this session (for checks that compare, e.g. masking
        flags that look at transfer results).
    """

    def __init__(self, session: "AuditSession", target: Any, check: Check):
        self.session = session
        self.target = target
        self.check = check
        self.data: AuditData = session.data
        self.settings = check.settings
        self.config = session.config
        self.device: torch.device = session.device
        self.seed = check_seed(session.config.seed, check.id, target.name)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.batch_size = session.config.batch_size
        self.results: list[CheckResult] = session.results

    @property
    def model_name(self) -> str:
        return self.target.name

    @property
    def n_images(self) -> int:
        return self.session.n_eval

    @property
    def clean(self) -> CleanPass:
        """The shared clean forward pass of this model over the evaluation images."""
        return self.session.clean_pass(self.target)

    def batches(self, split: str = "eval", limit: int | None = None, batch_size: int | None = None) -> Iterator[Batch]:
        """Batches of ``split`` on the device; eval is capped at ``--max-images``."""
        if split == "eval":
            limit = self.n_images if limit is None else min(limit, self.n_images)
        for batch in self.data.batches(split, batch_size or self.batch_size, limit=limit):
            yield batch.to(self.device)

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        """Wrap a long loop in a progress bar (shown on a terminal, hidden with -q or in logs)."""
        return self.session.progress(iterable, total=total, desc=f"{self.target.name} {self.check.id} {desc}".strip())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of the target on ``images`` with batch-size backoff on CUDA OOM."""
        return oom_backoff(self.target, images)

    def baseline_results(self) -> dict[str, CheckResult]:
        """This check's results on the baselines so far, by model name."""
        return {r.model: r for r in self.results if r.check == self.check.id and r.role == "baseline"}


def progress_bar(config: Config):
    """A function wrapping an iterable in a progress bar on stderr when the config asks for
    one (by default: on a terminal, not with -q), else returning it unchanged."""
    show = config.progress
    if show is None:
        show = config.verbosity >= 0 and sys.stderr.isatty()

    def wrap(iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        if not show:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    return wrap


def check_seed(seed: int, check_id: str, model: str) -> int:
    """A seed per (session seed, check, model): reruns agree, checks don't share streams."""
    return zlib.crc32(f"{seed}:{check_id}:{model}".encode()) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Leave the caller's random generators as they were: Python's ``random``, NumPy's global
    generator and torch's CPU and CUDA generators are saved on entry and restored on exit,
    whatever the block seeds or draws (an audit inside a training loop must not change the
    loop's shuffles)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class AuditSession:
    """One audit: the data, the target and baselines, the checks, and their results."""

    def __init__(self, config: Config, pluginmanager: Any, *, data: AuditData, target: Any, baselines: Sequence[Any] = ()):
        self.config = config
        self.pm = pluginmanager
        self.hook = pluginmanager.hook
        self.data = data
        self.target = target
        self.baselines = list(baselines)
        self.device = target.device
        self.n_eval = len(data.eval) if config.max_images is None else min(config.max_images, len(data.eval))
        self.results: list[CheckResult] = []
        self.checks: list[Check] = []
        self.models: list[dict[str, Any]] = []
        self.start = time.time()
        self.duration_s = 0.0
        self.interrupted = False
        self.exitstatus = ExitCode.OK
        self._clean: dict[str, CleanPass | TargetError] = {}
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

    def progress(self, iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
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
        outs, labels = [], []
        n_batches = -(-self.n_eval // self.config.batch_size)
        batches = self.data.batches("eval", self.config.batch_size, limit=self.n_eval)
        for batch in self.progress(batches, total=n_batches, desc=f"{target.name} clean forward pass"):
            images = batch.images.to(self.device)
            out = oom_backoff(target.query if not target.white_box else target, images)
            outs.append(out)
            if batch.labels is not None:
                labels.append(batch.labels.to(self.device))
        out = torch.cat(outs)
        label_t = torch.cat(labels) if labels and len(labels) == len(outs) else None
        if getattr(target, "returns", "scores") == "labels" and not target.white_box:
            return CleanPass(None, out.long(), label_t)
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            raise TargetError(
                f"{target.name} produced non-finite logits (NaN or inf) for {int(bad.sum())} of "
                f"{out.shape[0]} images (first: image {first}); expected finite logits"
            )
        return CleanPass(out, out.argmax(dim=1), label_t, probabilities=not target.white_box)

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
        with target:
            for check in self.checks:
                self.run_one(check, target)

    def run_one(self, check: Check, target: Any) -> CheckResult:
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
        self.results.append(result)
        self.hook.auditkit_log_result(result=result)
        return result

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
        is the audit's verdict, decided before anything was written."""
        from auditkit.outputs import call_writers, describe_failure

        self.duration_s = time.time() - self.start
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


class AuditRun:
    """The outcome of :func:`auditkit.audit`: every result, the models, the exit code.

    ``run["accuracy.clean"]`` is the target's result of that check;
    ``run["accuracy.clean", "resnet18"]`` a baseline's.
    """

    def __init__(self, session: AuditSession, report: dict[str, Any]):
        self.results: list[CheckResult] = list(session.results)
        self.exit_code: int = session.exitstatus
        self.not_written: list[str] = list(session.not_written)  # outputs that could not be written
        self.models = report.get("models", [])
        self.report = report
        self.duration_s = session.duration_s

    def __getitem__(self, key: str | tuple[str, str]) -> CheckResult:
        check_id, model = (key, "target") if isinstance(key, str) else key
        for r in self.results:
            if r.check == check_id and r.model == model:
                return r
        have = sorted({r.check for r in self.results})
        raise KeyError(f"no result for check {check_id!r} on model {model!r}; checks run: {have}")

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> bool:
        return self.exit_code == ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return self.report

    def to_dataframe(self) -> "pd.DataFrame":
        """One row per (check, model, metric): check, model, role, outcome, metric, value."""
        import pandas as pd

        rows = []
        for r in self.results:
            base = {"check": r.check, "model": r.model, "role": r.role, "outcome": r.outcome.value}
            if not r.metrics:
                rows.append({**base, "metric": None, "value": None})
            for metric, value in r.metrics.items():
                rows.append({**base, "metric": metric, "value": float(value)})
        return pd.DataFrame(rows, columns=["check", "model", "role", "outcome", "metric", "value"])

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        return f"<AuditRun exit_code={self.exit_code} {counts}>"


def environment() -> dict[str, Any]:
    import platform

    import torchvision

    import auditkit

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "auditkit": auditkit.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
