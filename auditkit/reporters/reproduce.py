"""The command line that reproduces an audit, as the scorecard shows it."""
from __future__ import annotations

import shlex
from typing import Any

from auditkit.options import shell_command


def reproduce_command(config: Any) -> tuple[str, str]:
    """The command line that reproduces the run, and a note on where it came from. From the
    recorded invocation when there is one; rebuilt from the configuration otherwise (the
    Python API), with a placeholder for a model that was passed as an object."""
    invocation = getattr(config, "invocation", None)
    if invocation:
        return shlex.join([str(a) for a in invocation]), ""
    note = "rebuilt from the configuration: this audit ran through the Python API"
    if not getattr(config, "model", None):
        note += " with a model object, so put its spec (file.py:factory) in place of the placeholder"
    if getattr(config, "check_settings", None):
        note += "; per-check settings go in [tool.auditkit.checks] (see the configuration below)"
    return shell_command(config), note
