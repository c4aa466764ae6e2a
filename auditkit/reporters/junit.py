"""JUnit XML: one testcase per check and model, so CI systems show audits like tests."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from auditkit.check import Outcome
from auditkit.markers import hookimpl


def build_junit(session: Any) -> ET.ElementTree:
    counts = {o: 0 for o in Outcome}
    for r in session.results:
        counts[r.outcome] += 1
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="auditkit",
        tests=str(len(session.results)),
        failures=str(counts[Outcome.FAILED]),
        errors=str(counts[Outcome.ERROR]),
        skipped=str(counts[Outcome.SKIPPED] + counts[Outcome.XFAILED]),
        time=f"{session.duration_s:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="data", value=str(session.data.spec))
    ET.SubElement(props, "property", name="model", value=str(session.target.spec))
    for r in session.results:
        case = ET.SubElement(suite, "testcase", classname=f"auditkit.{r.model}", name=r.check, time=f"{r.duration_s:.3f}")
        case_props = ET.SubElement(case, "properties")
        ET.SubElement(case_props, "property", name="role", value=r.role)
        for metric, value in r.metrics.items():
            ET.SubElement(case_props, "property", name=metric, value=f"{value:.6g}")
        if r.outcome is Outcome.FAILED:
            ET.SubElement(case, "failure", message=r.message).text = r.message
        elif r.outcome is Outcome.ERROR:
            ET.SubElement(case, "error", message=r.message).text = r.traceback or r.message
        elif r.outcome is Outcome.SKIPPED:
            ET.SubElement(case, "skipped", message=r.message)
        elif r.outcome is Outcome.XFAILED:
            ET.SubElement(case, "skipped", type="xfail", message=r.message)
    ET.indent(suites)
    return ET.ElementTree(suites)


@hookimpl
def auditkit_session_finish(session: Any, exitstatus: int) -> None:
    if session.config.junitxml:
        path = Path(session.config.junitxml)
        path.parent.mkdir(parents=True, exist_ok=True)
        build_junit(session).write(path, encoding="utf-8", xml_declaration=True)
        session.written.append(("JUnit XML", str(path)))
