"""Progress bars on stderr for long loops (baseline training, clean passes, checks), shown
on a terminal and hidden with -q, --no-progress or in logs."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:
    from auditkit.config import Config


def progress_bar(config: "Config") -> Callable[..., Iterable]:
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
