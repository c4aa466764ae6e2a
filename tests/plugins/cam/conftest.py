"""Fixtures for the cam.consistency tests: small synthetic shapes and a runner that loads only
this plugin, so other plugins under construction cannot affect these tests."""
from __future__ import annotations

import pytest

import auditkit
import auditkit_cam
from auditkit.data.synthetic import make_shapes


@pytest.fixture(scope="session")
def shapes64():
    """8 synthetic shapes at 64x64 with exact boxes and masks, no train split."""
    return make_shapes(n=8, n_train=0, size=64, classes=4, seed=0)


@pytest.fixture(scope="session")
def audit_cam():
    """``audit_cam(model, data, **kw)`` runs cam.consistency alone and returns its result."""

    def run(model, data, **kwargs):
        audit_run = auditkit.audit(
            model, data, checks=["cam.consistency"], plugins=[auditkit_cam], autoload=False, **kwargs
        )
        return audit_run["cam.consistency"], audit_run

    return run
