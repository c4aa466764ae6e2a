"""The JSON report (schema ``auditkit.report/1``, shipped as auditkit/schema/report.schema.json)."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from auditkit.markers import hookimpl

SCHEMA_ID = "auditkit.report/1"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "report.schema.json"


def build_report(session: Any) -> dict[str, Any]:
    """The report as a dict in the contract's shape, from a finished (or interrupted) session."""
    import auditkit
    from auditkit.device import describe_device
    from auditkit.environment import environment

    env = environment()
    env["device"] = describe_device(session.device)
    counts = session.counts()
    return {
        "schema": SCHEMA_ID,
        "auditkit_version": auditkit.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "config": session.config.to_json(),
        "data": {
            "spec": session.data.spec,
            "n_eval": session.n_eval,
            "n_train": 0 if session.data.train is None else len(session.data.train),
            "num_classes": session.data.num_classes,
            "class_names": session.data.class_names,
            "has_localization": session.data.has_localization,
            **({"preprocessing": dict(session.data.preprocessing)} if getattr(session.data, "preprocessing", None) else {}),
        },
        "models": [t.describe() for t in (session.target, *session.baselines)],
        "results": [r.to_json() for r in session.results],
        **({"warnings": list(session.warnings)} if getattr(session, "warnings", None) else {}),
        **(
            {"comparison": {"previous": session.config.compare, "regressions": [r.to_json() for r in session.regressions]}}
            if session.config.compare
            else {}
        ),
        "summary": {
            **counts,
            "duration_s": round(session.duration_s, 3),
            "exit_code": session.exitstatus,
            "interrupted": session.interrupted,
        },
    }


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


@hookimpl(tryfirst=True)  # the JSON first: whatever fails later, the results are on disk
def auditkit_session_finish(session: Any, exitstatus: int) -> None:
    if session.report is None:  # AuditSession.finish builds it once for every writer
        session.report = build_report(session)
    if session.config.json:
        path = write_json(session.report, session.config.json)
        session.written.append(("JSON report", str(path)))
