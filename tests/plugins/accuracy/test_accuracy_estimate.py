"""accuracy.clean's cost estimate: no image pass of its own, whatever its settings and the
number of images; it reads the clean pass the session makes once, outside every check."""
from __future__ import annotations

import pytest
import torch

import auditkit
import auditkit_accuracy
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import PassCounter

CHECK = "accuracy.clean"


@pytest.mark.parametrize(("n", "per_class"), [(6, True), (10, False)])
def test_the_estimate_is_no_pass_and_the_check_makes_none(n, per_class):
    torch.manual_seed(0)
    model = TinyGAPNet(num_classes=4)
    with PassCounter(model) as counter:
        run = auditkit.audit(
            model, f"synthetic:shapes?n={n}&size=32", baselines=[], checks=[CHECK], plugins=[auditkit_accuracy, counter],
            settings={CHECK: {"per_class": per_class}}, autoload=False, device="cpu", seed=0,
        )
    result = run[CHECK]
    assert result.metrics["n_images"] == n
    assert result.details["estimated_cost"] == {"forward": 0, "gradient": 0}
    assert (counter.forward[CHECK], counter.gradient[CHECK]) == (0, 0)
    assert counter.forward[None] == n  # the shared clean pass, once
