"""What the Python API returns: :class:`AuditRun`, the results of one audit, indexable by
check id and convertible to a pandas DataFrame."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from auditkit.check import CheckResult
from auditkit.errors import ExitCode

if TYPE_CHECKING:
    import pandas as pd

    from auditkit.session import AuditSession


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
        """One row per (check, model, metric): check, model, role, outcome, metric, value.

        :raises ImportError: pandas is not installed (``pip install auditkit[pandas]``)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("AuditRun.to_dataframe needs pandas: pip install 'auditkit[pandas]'") from exc

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
