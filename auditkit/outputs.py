"""The report files an audit writes: checked before anything loads, written one by one so
that one failing writer never costs the others their files.

An audit that ran for an hour must not lose its results to a typo in ``--html``: every
output path is tried before the model or the data load (:func:`check_output_paths`), two
outputs may not share a path, and at the end each writer runs on its own
(:func:`call_writers`), the JSON report first, with whatever could not be written listed
on the terminal and in the exit code.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from auditkit.errors import UsageError

log = logging.getLogger(__name__)

#: The config keys that name output files, the option that sets each, what is written and
#: the built-in plugin that writes it.
OUTPUTS: tuple[tuple[str, str, str, str], ...] = (
    ("json", "--json", "JSON report", "auditkit.reporters.json_report"),
    ("junitxml", "--junitxml", "JUnit XML", "auditkit.reporters.junit"),
    ("html", "--html", "HTML scorecard", "auditkit.reporters.html"),
    ("md", "--md", "Markdown summary", "auditkit.reporters.markdown"),
)


def check_writable(path: str | Path, option: str) -> None:
    """Raise ``UsageError`` unless a file can be written at ``path``.

    Tries what the writer will do, without changing anything the user has: creates missing
    parent folders, opens the file for appending (an existing file keeps its content and
    modification time) and removes it again when this call created it.

    :param option: the option that named the path (``--html``), for the message.
    :raises UsageError: the path is a folder, a parent is a file, or the file cannot be
        opened for writing (permissions, a read-only or special file system).
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; expected a file path such as {path / 'report'}")
    existed = path.exists()
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"{option} {path}: {blocker} is a file, not a folder; expected a writable file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{option} {path}: cannot be written ({reason}); expected a writable file path") from exc
    if not existed:
        try:
            path.unlink()
        except OSError:  # pragma: no cover - removed meanwhile
            pass


def check_output_paths(config: Any) -> None:
    """Check every output path the config names, before any model or data loads.

    :raises UsageError: a path cannot be written (:func:`check_writable`), or two outputs
        name the same file (only the last would survive).
    """
    named = [(option, value) for key, option, _, _ in OUTPUTS if (value := getattr(config, key, None))]
    by_file: dict[str, list[str]] = {}
    for option, value in named:
        by_file.setdefault(os.path.realpath(value), []).append(option)
    for option, value in named:
        sharing = by_file[os.path.realpath(value)]
        if len(sharing) > 1:
            raise UsageError(
                f"{', '.join(sharing[:-1])} and {sharing[-1]} all name {value}; each report needs its own file "
                "(only the last written would survive)"
            )
    for option, value in named:
        check_writable(value, option)


def call_writers(hook: Any, skip: Sequence[Any] = (), **kwargs: Any) -> list[tuple[str, BaseException]]:
    """Call each implementation of a pluggy hook on its own, in the order pluggy would, so
    that one raising does not stop the others; returns ``(plugin name, exception)`` for each
    that raised. Implementations in ``skip`` are left out. ``KeyboardInterrupt`` is not
    caught: a second Ctrl-C stops the writing."""
    failures: list[tuple[str, BaseException]] = []
    impls: list[Any] = hook.get_hookimpls()
    for impl in reversed(impls):  # pluggy calls the last registered (and tryfirst) first
        if impl in skip or getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue
        try:
            impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as exc:  # an output failed: the others are still written
            log.debug("writer %s failed", impl.plugin_name, exc_info=True)
            failures.append((impl.plugin_name, exc))
    return failures


def describe_failure(plugin: str, exc: BaseException, config: Any) -> str:
    """One line for an output that could not be written: what, where, why."""
    what = f"the output of plugin {plugin!r}"
    for key, _, name, module in OUTPUTS:
        if plugin == module:
            what = f"{name} {getattr(config, key, '')}"
    if isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    else:
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return f"{what} NOT written: {why}"

