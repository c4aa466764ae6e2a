"""Freed heap memory given back to the operating system between batches (glibc only).

glibc keeps the memory a process frees inside its heap, and on the CPU an audit's tensors
come and go in sizes that change from batch to batch (the white-box checks attack only the
correctly classified images of each batch): the heap then holds more and more free memory
the more batches run (measured in benchmarks/README.md: at 224 px, about 570 MiB free at the
end of whitebox.fgsm on 1,024 images). :func:`release_free_heap`, called before each batch of
a check (``AuditContext.batches``), gives the free pages back once more than
:data:`FREE_BYTES` are free: ``malloc_trim(0)`` (glibc >= 2.8; the free bytes from
``mallinfo2``, glibc >= 2.33). It changes no allocation and no result, only what stays
resident; elsewhere (macOS, musl, an older glibc) it does nothing.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any

FREE_BYTES = 64 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


_LIBC: Any = False  # False: not looked up yet; None: not glibc


def _glibc() -> Any:
    global _LIBC
    if _LIBC is False:
        _LIBC = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.mallinfo2.restype = _MallInfo2
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                libc.malloc_trim.restype = ctypes.c_int
                _LIBC = libc
            except (OSError, AttributeError):  # another C library, or a glibc without mallinfo2
                pass
    return _LIBC


def free_heap_bytes() -> int | None:
    """The bytes glibc's heap holds free (every arena), or None where that is not known."""
    libc = _glibc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def release_free_heap(threshold: int = FREE_BYTES) -> bool:
    """Give glibc's free heap pages back to the operating system when more than ``threshold``
    bytes are free; True when it did. Nothing else changes (no allocation, no result)."""
    free = free_heap_bytes()
    if free is None or free <= threshold:
        return False
    _glibc().malloc_trim(0)
    return True
