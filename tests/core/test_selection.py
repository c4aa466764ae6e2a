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


class _Config:
    def __init__(self, selected_checks=None, keyword=None):
        self.selected_checks = selected_checks
        self.keyword = keyword


class _Check:
    def __init__(self, id):
        self.id = id


def _select(**kwargs):
    from auditkit.selection import auditkit_modify_checks

    checks = [_Check(i) for i in IDS]
    auditkit_modify_checks(config=_Config(**kwargs), checks=checks)
    return [c.id for c in checks]


def test_a_keyword_typo_is_named_with_a_suggestion():
    with pytest.warns(UserWarning, match=r"-k 'gradcm' selected no check: no check id contains 'gradcm' \(did you mean 'gradcam'\?\); known checks: accuracy\.clean"):
        assert _select(keyword="gradcm") == []
    with pytest.warns(UserWarning, match=r"no check id contains 'faithfulnss' \(did you mean 'faithfulness'\?\)"):
        assert _select(keyword="gradcam and faithfulnss") == []


def test_a_misspelt_check_id_in_a_keyword_is_matched_whole():
    with pytest.warns(UserWarning, match=r"no check id contains 'gradcam.locaization' \(did you mean 'gradcam.localization'\?\)"):
        _select(keyword="gradcam.locaization")


def test_a_deliberately_empty_keyword_selection_is_not_called_a_typo(recwarn):
    # every word names checks: deselecting all of them is the user's choice (exit code 5 later)
    assert _select(keyword="gradcam and whitebox") == []
    assert not recwarn.list
    assert _select(keyword="pgd") == ["whitebox.pgd"]


def test_an_unknown_check_pattern_is_named_with_a_suggestion():
    with pytest.raises(UsageError, match=r"no check matches 'whitebox.pdg' \(did you mean 'whitebox.pgd'\?\); known checks"):
        _select(selected_checks=["whitebox.pdg"])
    assert _select(selected_checks=["gradcam.*", "whitebox.pgd"]) == ["gradcam.localization", "gradcam.faithfulness", "whitebox.pgd"]
