"""Seeds: one per (session seed, check, model) so reruns agree, and the caller's random
generators left as they were around an audit."""
from __future__ import annotations

import contextlib
import random
import zlib
from typing import Iterator

import numpy as np
import torch


def check_seed(seed: int, check_id: str, model: str) -> int:
    """A seed per (session seed, check, model): reruns agree, checks don't share streams."""
    return zlib.crc32(f"{seed}:{check_id}:{model}".encode()) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Leave the caller's random generators as they were: Python's ``random``, NumPy's global
    generator and torch's CPU and CUDA generators are saved on entry and restored on exit,
    whatever the block seeds or draws (an audit inside a training loop must not change the
    loop's shuffles)."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
