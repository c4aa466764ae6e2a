"""Errors the host turns into exit codes and one-line messages instead of tracebacks, and the
exit codes themselves."""
import enum


class UsageError(Exception):
    """Bad input from the user: a spec, a path, a config key, an option. Exit code 4.

    The message must say what was wrong and what was expected, in one line when possible.
    """


class TargetError(Exception):
    """The model under audit misbehaved (NaN logits, wrong output shape, rejected input).

    Inside a check it becomes that check's error outcome, with this message and no traceback noise.
    """


class ExitCode(enum.IntEnum):
    """Exit codes, as pytest's: 0 all passed, 1 a check failed or errored, 2 interrupted,
    3 internal error, 4 usage error, 5 no checks collected. An ``int``: the process exits
    with it and the JSON report writes it as a number."""

    OK = 0
    CHECKS_FAILED = 1
    INTERRUPTED = 2
    INTERNAL_ERROR = 3
    USAGE_ERROR = 4
    NO_CHECKS_COLLECTED = 5
