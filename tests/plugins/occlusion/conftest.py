"""Fixtures for the occlusion tests: the gradcam tests' known-answer models (a hand-set colour
detector, a net that learns the corner-marker shortcut in about a second), so that one model
is judged by both kinds of map."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import auditkit_occlusion.localization
from auditkit.data.synthetic import make_shapes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gradcam"))  # gradcam_models

from gradcam_models import train_shortcut_model  # noqa: E402


@pytest.fixture(scope="session")
def marked_shapes():
    """As in the gradcam tests: 32x32 shapes on plain backgrounds, every image with its class's
    corner marker (spurious=1: the marker predicts the class perfectly)."""
    return make_shapes(n=128, n_train=256, size=32, classes=4, seed=3, spurious=1.0, background="plain")


@pytest.fixture(scope="session")
def shortcut_model(marked_shapes):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: two threads on a shared 2-core machine mostly wait
    try:
        return train_shortcut_model(marked_shapes)
    finally:
        torch.set_num_threads(threads)


class MapRecorder:
    """Wraps the check's ``occlusion_maps`` and keeps what it was given and returned."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        original = auditkit_occlusion.localization.occlusion_maps

        def recording(forward, images, classes, grid, baselines, perturbations_per_eval):
            maps = original(forward, images, classes, grid, baselines, perturbations_per_eval)
            self.calls.append({"images": images.clone(), "classes": classes.clone(), "grid": grid,
                               "baselines": baselines, "p": perturbations_per_eval, "maps": maps.clone()})
            return maps

        monkeypatch.setattr(auditkit_occlusion.localization, "occlusion_maps", recording)

    def take(self) -> dict:
        calls, self.calls = self.calls, []
        return {k: (torch.cat([c[k] for c in calls]) if isinstance(calls[0][k], torch.Tensor) else calls[0][k]) for k in calls[0]}


@pytest.fixture
def map_recorder(monkeypatch) -> MapRecorder:
    """Records the occlusion maps the check computes (``map_recorder.take()`` after an audit)."""
    return MapRecorder(monkeypatch)
