"""Progress on stderr for long loops (baseline training, clean passes, checks): a bar on a
terminal; in a log (CI, a pipe) a plain line now and then, so that a long check is not
minutes of silence; nothing with -q or --no-progress."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from auditkit.config import Config

#: Seconds between two progress lines in a log. Output only: no result depends on it.
LOG_INTERVAL_S = 60.0


def progress_bar(config: "Config") -> Callable[..., Iterable]:
    """A function wrapping an iterable in progress output on stderr: a tqdm bar when stderr
    is a terminal (or ``progress`` is True), one line at most every :data:`LOG_INTERVAL_S`
    seconds when it is not (``<desc>: 12/40 (30%), 61 s``), nothing with ``-q`` or
    ``--no-progress`` (``progress`` False)."""
    show = config.progress
    terminal = sys.stderr.isatty()
    if show is None:
        show = config.verbosity >= 0 and terminal
        log = config.verbosity >= 0 and not terminal
    else:
        log = False

    def wrap(iterable: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        if show:
            from tqdm.auto import tqdm

            return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
        if log:
            return _log_lines(iterable, total, desc)
        return iterable

    return wrap


def _log_lines(iterable: Iterable, total: int | None, desc: str, interval: float = LOG_INTERVAL_S) -> Iterator:
    start = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= interval:
            last = now
            of = f"/{total} ({100 * done / total:.0f}%)" if total else ""
            sys.stderr.write(f"{desc or 'working'}: {done}{of}, {now - start:.0f} s\n")
            sys.stderr.flush()
