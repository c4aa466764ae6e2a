"""Batch-size backoff on CUDA out-of-memory, simulated on the CPU."""
from __future__ import annotations

import pytest
import torch

from auditkit.batching import oom_backoff


def test_oom_backoff_splits_until_the_batch_fits_and_keeps_order():
    sizes = []

    def fn(x):
        sizes.append(x.shape[0])
        if x.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return x * 2, {"sum": x.sum(dim=1)}

    x = torch.arange(20.0).reshape(10, 2)
    doubled, extra = oom_backoff(fn, x)
    assert torch.equal(doubled, x * 2)
    assert torch.equal(extra["sum"], x.sum(dim=1))
    assert max(s for s in sizes if s <= 3) <= 3 and sizes[0] == 10


def test_other_errors_propagate_unchanged():
    def fn(x):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError, match="not an OOM"):
        oom_backoff(fn, torch.zeros(4, 1))


def test_a_single_item_that_does_not_fit_raises():
    def fn(x):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        oom_backoff(fn, torch.zeros(4, 1))
