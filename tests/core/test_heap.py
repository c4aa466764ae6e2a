"""auditkit.heap: glibc's free heap pages given back between batches, and nothing done where
the C library is another."""
from __future__ import annotations

import pytest
import torch

from auditkit import heap


def test_free_pages_are_given_back_only_beyond_the_threshold():
    if heap.free_heap_bytes() is None:
        pytest.skip("not glibc (or a glibc without mallinfo2): release_free_heap does nothing here")
    big = [torch.ones(1 << 16) for _ in range(64)]  # some heap to free
    del big
    assert heap.free_heap_bytes() >= 0
    assert heap.release_free_heap(threshold=1 << 62) is False  # never that much free
    assert heap.release_free_heap(threshold=-1) is True  # always: malloc_trim ran


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(heap, "_LIBC", None)
    assert heap.free_heap_bytes() is None
    assert heap.release_free_heap(threshold=-1) is False
