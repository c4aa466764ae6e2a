"""``auditkit demo``: the embedded default audit, runnable with nothing but the package."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from auditkit.config import Config
from auditkit.session import ExitCode

DEMO_MODEL = "torchvision:resnet18"
DEMO_DATA = "synthetic:shapes?n=64&size=64"
DEMO_MAX_IMAGES: int | None = None


def run_demo(out: Path, device: str = "auto", plugins: Sequence[str] = (), verbosity: int = 0) -> int:
    """Audit a randomly initialised torchvision ResNet-18 on the built-in synthetic shapes
    with every registered check, writing the reports under ``out``. Exits 0 when the audit
    ran, whatever it found: the demo shows a finding, it does not gate anything."""
    from auditkit.main import run_audit
    from auditkit.plugin_manager import get_plugin_manager
    from auditkit.reporters.terminal import TerminalReporter

    out.mkdir(parents=True, exist_ok=True)
    config = Config(
        model=DEMO_MODEL,
        data=DEMO_DATA,
        device=device,
        max_images=DEMO_MAX_IMAGES,
        json=str(out / "report.json"),
        junitxml=str(out / "junit.xml"),
        verbosity=verbosity,
        invocation=["auditkit", "demo", "--out", str(out)],
    )
    pm = get_plugin_manager(plugins, confdir=None)
    session = run_audit(config, pm, reporter=TerminalReporter(verbosity=verbosity))
    verdict = {
        ExitCode.OK: "every check passed",
        ExitCode.CHECKS_FAILED: "the audit found failures (that is its job; the demo itself succeeded)",
        ExitCode.NO_CHECKS_COLLECTED: "no checks are registered",
    }.get(session.exitstatus, f"the audit ended with exit code {session.exitstatus}")
    print(f"\nauditkit demo: {verdict}. Reports in {out}/", file=sys.stdout)
    if session.exitstatus in (ExitCode.OK, ExitCode.CHECKS_FAILED):
        return ExitCode.OK
    return session.exitstatus
