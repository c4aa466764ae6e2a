"""The bad-input collection (issue: hostile inputs and failures).

Every case here feeds auditkit something a user or an attacker could hand it (a tampered
report, an unwritable output path, a corrupt image, a model file of random bytes, a config
typo, a hostile endpoint) and holds it to the same bar:

- no traceback, ever: a usage error is exit 4 with exactly one ``auditkit: error:`` line that
  names what was wrong and what was expected;
- nothing unsafe: no code named by a file is imported or run;
- no wrong result: a verdict on a mismatched comparison or a degenerate dataset is refused;
- nothing lost: results are written even when another output fails.

Each file holds one class of input (reports and outputs, data, model files, configuration);
add new cases beside their kin. ``run_cli`` runs the command in-process (fast); cases that
depend on what a library logs to the real stderr use ``run_cli_subprocess``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditkit.cli import main
from auditkit.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:shapes?n=8&size=32"
FACTORY = "auditkit.testing.models:tiny_factory"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default reports/ go here, and no pyproject.toml is picked up


@pytest.fixture
def cli(capsys):
    """``cli("run", "--model", ...)`` -> CliResult; runs ``auditkit`` in-process."""

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(int(code), captured.out, captured.err)

    return run


def run_cli_subprocess(*argv: str, cwd: Path, timeout: float = 300) -> CliResult:
    """``python -m auditkit ...`` in a child process: what a user's terminal shows, including
    whatever libraries log or print to the real stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "auditkit", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_no_traceback(result: CliResult) -> None:
    for stream in (result.out, result.err):
        assert "Traceback (most recent call last)" not in stream, stream
        assert "\x1b[" not in stream, f"terminal colour codes in the output: {stream!r}"


def assert_usage_error(result: CliResult, *needles: str) -> str:
    """Exit 4, no traceback, exactly one ``auditkit: error:`` line on stderr (warnings may
    precede it), and that line names every needle (case-insensitive). Returns the line."""
    assert_no_traceback(result)
    assert result.code == ExitCode.USAGE_ERROR, (result.code, result.err)
    errors = [line for line in result.error_lines if line.startswith("auditkit: error:")]
    others = [line for line in result.error_lines if not line.startswith(("auditkit: error:", "warning:", "auditkit: warning:"))]
    assert len(errors) == 1, result.err
    assert not others, f"stray lines on stderr besides the one error line: {others}"
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])
    return errors[0]
