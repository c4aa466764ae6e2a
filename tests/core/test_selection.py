"""Check selection with --checks patterns and -k expressions."""
from __future__ import annotations

import pytest

from auditkit.errors import UsageError
from auditkit.selection import keyword_matcher

IDS = ["accuracy.clean", "gradcam.localization", "gradcam.faithfulness", "whitebox.pgd", "whitebox.fgsm"]


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("gradcam", ["gradcam.localization", "gradcam.faithfulness"]),
        ("gradcam and not faith", ["gradcam.localization"]),
        ("pgd or clean", ["accuracy.clean", "whitebox.pgd"]),
        ("not (whitebox or gradcam)", ["accuracy.clean"]),
        ("GRADCAM and LOCAL", ["gradcam.localization"]),
    ],
)
def test_keyword_expressions(expr, expected):
    matcher = keyword_matcher(expr)
    assert [i for i in IDS if matcher(i)] == expected


@pytest.mark.parametrize("expr", ["", "a and", "(a or b", "a b"])
def test_bad_keyword_expressions_are_usage_errors(expr):
    with pytest.raises(UsageError):
        keyword_matcher(expr)
