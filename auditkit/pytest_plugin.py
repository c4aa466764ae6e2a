"""The pytest plugin: an ``auditkit_audit`` fixture that audits a model once per test session
and returns the results, so a test suite can assert on metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("auditkit")
    group.addoption(
        "--auditkit-scorecard",
        metavar="DIR",
        default=None,
        help="write each audit's HTML scorecard and JSON report made through the auditkit_audit fixture into DIR",
    )


@pytest.fixture(scope="session")
def auditkit_audit(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Audit a model and return the ``auditkit.AuditRun``; cached for the test session, so
    tests asserting on different metrics of the same audit share one run::

        def test_localization(auditkit_audit):
            run = auditkit_audit(my_model, "synthetic:shapes?n=64", checks=["gradcam.*"])
            assert run["gradcam.localization"].metrics["pointing_game"] > 0.6

    Takes the arguments of :func:`auditkit.audit`. The cache key is the model object (or
    spec), the data object (or spec), the checks and the other arguments; the model is held
    for the session so its identity stays valid.
    """
    import auditkit

    cache: dict[tuple, tuple[Any, Any, Any]] = {}
    outdir = request.config.getoption("auditkit_scorecard")

    def run(model: Any, data: Any = "synthetic:shapes", checks: Any = None, **kwargs: Any) -> Any:
        key = (
            model if isinstance(model, str) else id(model),
            data if isinstance(data, str) else id(data),
            tuple(checks or ()),
            repr(sorted(kwargs.items())),
        )
        if key not in cache:
            if outdir:
                stem = Path(outdir) / f"audit-{len(cache) + 1}"
                kwargs.setdefault("html", str(stem.with_suffix(".html")))
                kwargs.setdefault("json", str(stem.with_suffix(".json")))
            cache[key] = (auditkit.audit(model, data, checks, **kwargs), model, data)
        return cache[key][0]

    return run
