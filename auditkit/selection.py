"""Built-in check selection: ``--checks ID,ID`` (exact ids or ``family.*``) and ``-k EXPR``
(pytest-style keyword expressions over check ids)."""
from __future__ import annotations

import difflib
import fnmatch
import re
import warnings
from typing import Any

from auditkit.check import Check
from auditkit.errors import UsageError
from auditkit.markers import hookimpl


@hookimpl(tryfirst=True)
def auditkit_modify_checks(config: Any, checks: list[Check]) -> None:
    if config.selected_checks:
        known = [c.id for c in checks]
        selected = []
        for pattern in config.selected_checks:
            matched = [c for c in checks if fnmatch.fnmatchcase(c.id, pattern) or c.id.startswith(pattern + ".")]
            if not matched:
                hint = _did_you_mean(pattern, known)
                raise UsageError(f"no check matches {pattern!r}{hint}; known checks: {', '.join(known)}")
            selected.extend(c for c in matched if c not in selected)
        checks[:] = selected
    if config.keyword:
        matcher = keyword_matcher(config.keyword)
        before = [c.id for c in checks]
        checks[:] = [c for c in checks if matcher(c.id)]
        if before and not checks:
            # nothing selected is exit code 5, as in pytest; a word no check id contains is
            # likely a typo: say which, with the closest part of a check id
            for word in keyword_words(config.keyword):
                if not any(word in cid.lower() for cid in before):
                    parts = sorted({cid.lower() for cid in before} | {p for cid in before for p in re.split(r"[._]", cid.lower())})
                    warnings.warn(
                        f"-k {config.keyword!r} selected no check: no check id contains {word!r}"
                        f"{_did_you_mean(word, parts)}; known checks: {', '.join(before)}",
                        UserWarning, stacklevel=2,
                    )
                    break


def keyword_words(expr: str) -> list[str]:
    """The names of a ``-k`` expression (lower case), without its operators and parentheses."""
    return [t.lower() for t in re.findall(r"[^\s()]+", expr) if t not in ("and", "or", "not")]


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def keyword_matcher(expr: str):
    """Compile ``-k`` expressions: substrings of the check id joined with and/or/not and
    parentheses, as in pytest (``-k "gradcam and not faithfulness"``)."""
    tokens = re.findall(r"\(|\)|[^\s()]+", expr)
    if not tokens:
        raise UsageError(f"-k {expr!r}: empty expression")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def parse_or():
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def parse_and():
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def parse_not():
        if peek() == "not":
            take()
            inner = parse_not()
            return lambda s: not inner(s)
        return parse_atom()

    def parse_atom():
        tok = peek()
        if tok is None or tok in ("and", "or", ")"):
            raise UsageError(f"-k {expr!r}: expected a name at position {pos + 1}")
        take()
        if tok == "(":
            inner = parse_or()
            if peek() != ")":
                raise UsageError(f"-k {expr!r}: missing ')'")
            take()
            return inner
        word = tok.lower()
        return lambda s: word in s.lower()

    matcher = parse_or()
    if pos != len(tokens):
        raise UsageError(f"-k {expr!r}: unexpected {tokens[pos]!r}")
    return matcher
