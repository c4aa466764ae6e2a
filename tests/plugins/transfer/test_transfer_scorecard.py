"""The transfer scorecard section (auditkit_transfer/scorecard.py), from hand-built results shaped
like transfer.proxy's: transfer success against epsilon, one line per model with its band and the
random-noise control, and the queries each proxy cost, whatever subset of them exists."""
from __future__ import annotations

import re

from auditkit import Artifact, CheckResult
from auditkit.config import Config
from auditkit.plugin_manager import get_plugin_manager
from auditkit.reporters.html import render_scorecard
from auditkit.testing.html import lint_html
from auditkit.testing.scorecard import budget_curve, charts, only_section, result
from auditkit_transfer import scorecard

EVIL = "<script>alert(1)</script>"


def r(model, outcome="passed", metrics=None, artifacts=(), **kw) -> CheckResult:
    return result("transfer.proxy", model, outcome, metrics, artifacts, **kw)


def budget_metrics(rates: dict[str, float]) -> dict[str, float]:
    out = {"queries": 256.0, "attack_queries": 96.0, "proxy_agreement": 0.8, "proxy_agreement_lo": 0.7, "proxy_agreement_hi": 0.9}
    for key, rate in rates.items():
        out[f"transfer_success@{key}"] = rate
        out[f"transfer_success_lo@{key}"] = rate - 0.1
        out[f"transfer_success_hi@{key}"] = rate + 0.1
        out[f"transfer_success@pgd_{key}"] = rate  # one attack's: not a budget-level point
        out[f"noise_success@{key}"] = rate / 4
    out["transfer_success"], out["transfer_success_lo"], out["transfer_success_hi"] = 0.4, 0.3, 0.5
    return out


def curves(rates: dict[tuple[str, float], float]) -> tuple:
    """The curves transfer.proxy reports for these budget-level rates: the strongest attack at
    each budget (with its band) and the random-noise control, per norm."""
    out = []
    for norm in ("linf", "l2"):
        points = sorted((eps, rate) for (n, eps), rate in rates.items() if n == norm)
        eps, values = [e for e, _ in points], [v for _, v in points]
        out.append(budget_curve("transfer_success", norm, eps, values, [v - 0.1 for v in values], [v + 0.1 for v in values]))
        out.append(budget_curve("noise_success", norm, eps, [v / 4 for v in values]))
    return tuple(out)


def results() -> list[CheckResult]:
    rates = {("linf", 4 / 255): 0.2, ("linf", 8 / 255): 0.4, ("linf", 16 / 255): 0.7, ("l2", 0.5): 0.3}
    return [
        r("target", "failed", budget_metrics({"linf_4/255": 0.2, "linf_8/255": 0.4, "linf_16/255": 0.7, "l2_0.5": 0.3}),
          artifacts=[Artifact("proxy_validation_agreement", "curve", {"x": [1, 2, 3], "y": [0.5, 0.7, 0.8]}, "agreement")],
          curves=curves(rates),
          details={"training": {"proxy": "resnet", "trained_on": "scores", "epochs": 3},
                   "gate": {"norm": "linf", "epsilon": "8/255", "attack": "pgd"}}, message=f"flips {EVIL}"),
        # a baseline with its main curve only (no noise control, no metrics): one line, with its band; a
        # per-attack curve (variant) is not drawn
        r("resnet18", curves=(
            budget_curve("transfer_success", "linf", [4 / 255, 8 / 255], [0.15, 0.2], [0, 0.1], [0.3, 0.3]),
            budget_curve("transfer_success", "linf", [4 / 255, 8 / 255], [0.9, 0.9], variant="fgsm"),
        )),
        r("alexnet", "skipped", message="the model returns labels only, not scores"),
    ]


def section(rs=None) -> dict:
    return only_section(scorecard, results() if rs is None else rs)


def test_section_is_well_formed():
    s = section()
    assert (s["id"], s["order"], s["checks"]) == ("transfer", scorecard.ORDER, ["transfer.proxy"])
    assert lint_html(s["html"], fragment=True) == []


def test_transfer_success_against_epsilon_one_line_per_model():
    linf = charts(section()["html"])["Transfer success, L\u221e"]
    # target: the attack line and its noise control; resnet18: its attack line
    assert linf.count("<polyline") == 3 and linf.count("<polygon") == 2
    assert ">target</text>" in linf and ">target, random noise</text>" in linf and ">resnet18</text>" in linf
    assert ">16</text>" in linf  # epsilon in 1/255 units
    assert "transfer success 0.1500" in linf and "transfer success 0.9000" not in linf  # resnet18's main curve only
    l2 = charts(section()["html"])["Transfer success, L2"]
    assert ">target</text>" in l2 and "resnet18" not in l2


def test_queries_spent_and_proxy_agreement():
    html = section()["html"]
    assert "Queries spent" in html
    assert '<td class="num">256</td>' in html and '<td class="num">96</td>' in html
    assert "0.800 [0.700, 0.900]" in html and "pgd linf 8/255" in html and "resnet on scores" in html
    assert "Proxy validation agreement" in charts(html)


def test_skips_and_escaping():
    html = section()["html"]
    assert "the model returns labels only, not scores" in html
    assert EVIL not in html


def test_renders_whatever_subset_exists():
    assert scorecard.auditkit_scorecard_sections(results=[], config=Config()) == []
    bare = section([r("target")])
    assert lint_html(bare["html"], fragment=True) == []
    assert "<svg" not in bare["html"] and "Queries spent" in bare["html"]


def test_in_the_scorecard():
    pm = get_plugin_manager(autoload=False, extra=[scorecard])
    page = render_scorecard(results(), Config(model="m", invocation=["auditkit", "run"]), pm=pm)
    assert lint_html(page) == []
    assert re.findall(r'<section class="plugin[^"]*" id="([^"]+)"', page) == ["section-transfer"]
