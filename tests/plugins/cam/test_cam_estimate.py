"""cam.consistency's cost estimate (``Check.estimate``) against the image passes it makes,
counted at the model's stem: one pass with a backward per image, one without for its mirror."""
from __future__ import annotations

import pytest
import torch

import auditkit
import auditkit_cam
from auditkit.testing.models import TinyGAPNet
from auditkit.testing.passes import PassCounter

CHECK = "cam.consistency"


@pytest.mark.parametrize(("n", "batch_size"), [(6, 4), (10, 3)])
def test_the_estimate_equals_its_passes(n, batch_size):
    torch.manual_seed(0)
    model = TinyGAPNet(num_classes=4)
    with PassCounter(model) as counter:
        run = auditkit.audit(
            model, f"synthetic:shapes?n={n}&size=32", baselines=[], checks=[CHECK], plugins=[auditkit_cam, counter],
            autoload=False, batch_size=batch_size, device="cpu", seed=0,
        )
    result = run[CHECK]
    assert result.outcome is auditkit.Outcome.PASSED, result.message
    assert result.metrics["n_images"] == n
    assert result.details["estimated_cost"] == {"forward": n, "gradient": n}
    assert (counter.forward[CHECK], counter.gradient[CHECK]) == (n, n)
