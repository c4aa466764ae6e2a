"""Progress output: a bar on a terminal, an occasional line in a log, nothing with -q."""
from __future__ import annotations

from types import SimpleNamespace

import auditkit.progress as progress


def _config(verbosity=0, shown=None):
    return SimpleNamespace(progress=shown, verbosity=verbosity)


def test_in_a_log_a_long_loop_prints_an_occasional_line(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    clock = iter(float(t) for t in range(0, 1000, 40))  # each step "takes" 40 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    items = list(progress.progress_bar(_config())(range(4), total=4, desc="target whitebox.pgd"))
    assert items == [0, 1, 2, 3]
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["target whitebox.pgd: 2/4 (50%), 80 s", "target whitebox.pgd: 4/4 (100%), 160 s"]


def test_quiet_or_no_progress_prints_nothing(monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(progress.time, "monotonic", iter(float(t) for t in range(0, 10000, 100)).__next__)
    for config in (_config(verbosity=-1), _config(shown=False)):
        assert list(progress.progress_bar(config)(range(3), total=3)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
