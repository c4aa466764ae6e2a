"""What transfer.proxy costs: its estimate is the target's queries (counted at the model's stem,
or by the black box's own server), its note the proxy's own passes, and the proxy's clean-point
gradient is taken once per batch and mode, FGSM and MI-FGSM stepping from it bit for bit as
torchattacks does."""
from __future__ import annotations

import contextlib
import copy
from collections import Counter

import pytest
import torch
from torch.nn.modules.module import register_module_forward_pre_hook

import auditkit
from auditkit import AuditData, Outcome, TensorSplit
from auditkit.testing.passes import PassCounter
from auditkit_transfer import attacks
from auditkit_transfer.attacks import AttackConfig, clean_point, craft
from auditkit_transfer.proxy import ProxyResNet
from conftest import FAST
from transfer_servers import PredictionServer

CHECK = "transfer.proxy"
# Every attack, both modes, two Linf budgets: FGSM and MI-FGSM share each mode's first gradient.
ALL_ATTACKS = {"attacks": ["fgsm", "pgd", "mifgsm"], "modes": ["untargeted", "targeted"],
               "linf_epsilons": ["4/255", "8/255"]}
# Training never stops early: the proxy's passes are then exactly the estimate's.
NO_EARLY_STOP = {"patience": 0, "max_train_seconds": None}


def counted(model, data, max_images=None, **settings):
    """The check's result (FAST settings, two epochs a round, ``settings`` over them) and the
    passes through ``model``."""
    with PassCounter(model) as counter:
        run = auditkit.audit(model, data, baselines=[], checks=[CHECK], settings={CHECK: {**FAST, "epochs_per_round": 2, **settings}},
                             plugins=[counter], device="cpu", seed=0, max_images=max_images, verbose=-1)
    return run[CHECK], counter


@contextlib.contextmanager
def proxy_passes():
    """Images through any ProxyResNet, by kind: ``training`` (train mode), ``input_gradient``
    (eval mode, gradients on), ``forward`` (eval mode, no gradients)."""
    seen: Counter[str] = Counter()

    def count(module, args):
        if isinstance(module, ProxyResNet):
            kind = "training" if module.training else "input_gradient" if torch.is_grad_enabled() else "forward"
            seen[kind] += int(args[0].shape[0])

    handle = register_module_forward_pre_hook(count)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        # the budget cuts the augmentation round (48 seed queries leave 12); no noise control
        {"query_budget": 60, "attacks": ["fgsm", "mifgsm"], "modes": ["untargeted", "targeted"], "noise_control": False},
        # two rounds, the second cut by the budget; every attack at two budgets, on 8 images
        {**ALL_ATTACKS, "query_budget": 150, "augment_rounds": 2, "epochs_per_round": 1, "max_images": 8},
    ],
    ids=["fast", "budget-cut", "two-rounds"],
)
def test_the_estimate_is_the_queries_the_check_makes(target_cnn, labelled_by_target, settings):
    result, counter = counted(target_cnn, labelled_by_target, **settings)
    assert result.outcome is not Outcome.ERROR, result.message
    m, cost = result.metrics, result.details["estimated_cost"]
    assert cost["forward"] == counter.forward[CHECK] == m["queries"] + m["attack_queries"]
    assert cost["gradient"] == counter.gradient[CHECK] == 0  # the target is only queried
    assert cost["note"].startswith("proxy network, not the audited model: at most ")


def test_only_correctly_answered_images_are_attacked_and_estimated(target_cnn, shapes):
    result, counter = counted(target_cnn, shapes)  # the data's own labels: the target gets some wrong
    n_base = int(result.metrics["n_images"])
    assert 0 < n_base < len(shapes.eval)
    # 48 seed queries and 38 augmentation points, then PGD Linf and L2 and the two noise budgets per attacked image
    assert result.details["estimated_cost"]["forward"] == counter.forward[CHECK] == 48 + 38 + 4 * n_base


def test_a_target_that_answers_nothing_right_is_estimated_at_no_queries(target_cnn, labelled_by_target):
    data = labelled_by_target
    wrong = AuditData("every label wrong", TensorSplit(data.eval.images, (data.eval.labels + 1) % 4), data.train,
                      num_classes=4, spec=data.spec)
    result, counter = counted(target_cnn, wrong)
    assert result.outcome is Outcome.SKIPPED
    assert result.details["estimated_cost"] == {"forward": 0, "gradient": 0} and counter.forward[CHECK] == 0


def test_a_label_only_endpoint_is_estimated_by_its_queries(colour_cnn, shapes):
    with PredictionServer(colour_cnn, answer="labels") as server:
        run = auditkit.audit(server.url, shapes, baselines=[], checks=[CHECK], settings={CHECK: {**FAST, "query_budget": 70}},
                             seed=0, verbose=-1)
    result = run[CHECK]
    assert result.outcome is not Outcome.ERROR, result.message
    probe, clean = 2, len(shapes.eval)  # the host's probe of the spec, the shared clean pass
    assert result.details["estimated_cost"]["forward"] == server.log.images - probe - clean


def test_sharing_the_clean_point_gradient_changes_no_result_and_the_note_counts_the_proxys_passes(
    target_cnn, labelled_by_target, monkeypatch
):
    results, seen = {}, {}
    for reuse in (False, True):
        monkeypatch.setattr(attacks, "REUSE", reuse)
        with proxy_passes() as seen[reuse]:
            results[reuse], counter = counted(target_cnn, labelled_by_target, max_images=8, **ALL_ATTACKS, **NO_EARLY_STOP)
        assert counter.gradient[CHECK] == 0  # none of the proxy's passes went through the audited model
    assert results[True].metrics == results[False].metrics
    assert results[True].details["table"] == results[False].details["table"]  # the proxy's own successes too

    # 48 seed images, 10 held out: 38 training images, 76 after one augmentation round; 2 epochs each
    training, validation = 2 * (38 + 76), 2 * 2 * 10
    # 8 configurations (FGSM, PGD, MI-FGSM at two Linf budgets; FGSM and PGD at one L2), 2 modes, 8 images
    n, modes, steps = 8, 2, 3
    forward = validation + n + n * 8 * modes  # validation, agreement with the target, scoring each example
    per_mode = {
        # one clean-point gradient for the FGSMs and the MI-FGSMs' first steps; PGD its own
        True: 1 + 3 * 0 + 2 * (steps - 1) + 3 * steps,
        False: 3 * 1 + 2 * steps + 3 * steps,  # each FGSM and MI-FGSM takes its own gradient
    }
    for reuse, result in results.items():
        input_gradient = 1 + 38 + n * modes * per_mode[reuse]  # the gradient probe, augmentation, the attacks
        assert dict(seen[reuse]) == {"training": training, "input_gradient": input_gradient, "forward": forward}
        assert (f"at most {training:,} training image passes (forward+backward to its weights), {input_gradient:,} "
                f"forward+backward to its input (augmentation, attacks) and {forward:,} forward") in result.details["estimated_cost"]["note"]
    # per image and mode, the 5 clean-point gradients of FGSM (two Linf budgets, one L2) and
    # MI-FGSM (two Linf budgets) became 1
    assert seen[False]["input_gradient"] - seen[True]["input_gradient"] == n * modes * 4


@pytest.mark.parametrize("config", [AttackConfig(a, n, e) for a, n, e in [
    ("fgsm", "linf", 4 / 255), ("fgsm", "l2", 0.5), ("mifgsm", "linf", 8 / 255),
]], ids=lambda c: c.key)
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_steps_from_the_clean_point_gradient_are_torchattacks_bit_for_bit(target_cnn, shapes, config, targeted):
    proxy = copy.deepcopy(target_cnn).eval()
    images = shapes.eval.images[:8]
    labels = torch.arange(8) % 4
    point = clean_point(proxy, images, labels, targeted=targeted)
    ours = craft(proxy, config, images, labels, steps=3, targeted=targeted, clean_point=point)
    theirs = craft(proxy, config, images, labels, steps=3, targeted=targeted)
    assert torch.equal(ours, theirs) and ours.is_contiguous()
    assert not proxy.training  # handed back in the mode it was in
