"""Per-image records that stay flat in memory however many images there are.

A check's statistics need some values per image (a score per class, a Grad-CAM map). Kept in
memory, they grow with the evaluation set: 4 KB an image for ImageNet's 1,000 class scores,
200 MB for its 50,000 validation images, in every process. :class:`ImageRows` keeps them in
memory up to a byte limit and beyond it in an unlinked temporary file, read back a batch at
a time: what the records hold in memory then no longer grows with the number of images.

The limit is :data:`IN_MEMORY_BYTES` per record (64 MiB), or ``AUDITKIT_RECORDS_IN_MEMORY``
(bytes, with an optional K, M or G suffix: ``64M``; ``0`` spills every record). Rows read
from the file hold exactly the bits written: an audit gives the same numbers either way.
"""
from __future__ import annotations

import os
import tempfile

import torch

from auditkit.errors import UsageError

IN_MEMORY_BYTES = 64 << 20
RECORDS_ENV = "AUDITKIT_RECORDS_IN_MEMORY"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def in_memory_limit() -> int:
    """The bytes a record may hold in memory: ``AUDITKIT_RECORDS_IN_MEMORY`` when set, else
    :data:`IN_MEMORY_BYTES`.

    :raises UsageError: the variable is not a byte count such as ``0``, ``1048576`` or ``64M``."""
    raw = os.environ.get(RECORDS_ENV, "").strip()
    if not raw:
        return IN_MEMORY_BYTES
    number, unit = raw.rstrip("KMGkmgBb"), raw[len(raw.rstrip("KMGkmgBb")):].upper().rstrip("B")
    if not number.isdigit() or unit not in _UNITS:
        raise UsageError(f"{RECORDS_ENV} must be a number of bytes such as 0, 1048576 or 64M, got {raw!r}")
    return int(number) * _UNITS[unit]


class ImageRows:
    """One row per evaluation image, ``[n_images, *row_shape]`` of one dtype, written and read
    by evaluation position.

    The row shape and dtype are those of the first rows written. While ``n_images`` rows fit
    in ``limit`` bytes they are one tensor on ``device``, allocated uninitialized at the first
    write (on the CPU, the pages of rows never written then cost no memory); beyond it, an
    unlinked temporary file (in ``TMPDIR``), written a run of consecutive positions at a time
    and read back into a fresh tensor on ``device``, so that only the rows being used are in
    memory. Reading a row that was never written is an error, either way.

    :param n_images: the number of rows.
    :param device: where :meth:`read` and :meth:`full` return rows.
    :param limit: bytes the rows may hold in memory; None: :func:`in_memory_limit`.
    """

    def __init__(self, n_images: int, device: torch.device | str, limit: int | None = None):
        self.n_images = int(n_images)
        self.device = torch.device(device)
        self.limit = in_memory_limit() if limit is None else int(limit)
        self.row_shape: tuple[int, ...] | None = None
        self.dtype: torch.dtype | None = None
        self._rows: torch.Tensor | None = None  # in memory
        self._written = torch.zeros(self.n_images, dtype=torch.bool)  # per row, on the CPU
        self._file = None  # spilled: an unlinked temporary file
        self._row_numel = self._row_bytes = 0

    @property
    def spilled(self) -> bool:
        """True when the rows live in the temporary file."""
        return self._file is not None

    @property
    def started(self) -> bool:
        """True once some rows were written (the row shape and dtype are known)."""
        return self.row_shape is not None

    def _start(self, rows: torch.Tensor) -> None:
        self.row_shape, self.dtype = tuple(rows.shape[1:]), rows.dtype
        self._row_numel = int(torch.Size(self.row_shape).numel())
        self._row_bytes = self._row_numel * rows.element_size()
        if self.n_images * self._row_bytes <= self.limit:
            self._rows = torch.empty((self.n_images, *self.row_shape), dtype=self.dtype, device=self.device)
        else:
            self._file = tempfile.TemporaryFile(prefix="auditkit-rows-")
            os.ftruncate(self._file.fileno(), self.n_images * self._row_bytes)  # sparse: unwritten rows take no disk

    def written(self, index: torch.Tensor) -> torch.Tensor:
        """Which of the positions ``index`` (long [B], any device) hold a written row: bool [B]
        on ``index``'s device."""
        return self._written[index.cpu()].to(index.device)

    def write(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        """Store ``rows`` ``[B, *row_shape]`` at the evaluation positions ``index`` (long [B],
        any device).

        :raises ValueError: rows of another shape or dtype than the first ones, or a
            position outside ``[0, n_images)``."""
        if self.row_shape is None:
            self._start(rows)
        if tuple(rows.shape[1:]) != self.row_shape or rows.dtype != self.dtype or rows.shape[0] != index.shape[0]:
            raise ValueError(
                f"rows {tuple(rows.shape)} {rows.dtype} for {index.shape[0]} positions; expected "
                f"[{index.shape[0]}, {', '.join(map(str, self.row_shape))}] {self.dtype}"
            )
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n_images):
            raise ValueError(f"positions must lie in [0, {self.n_images}), got {int(index.min())}..{int(index.max())}")
        self._written[index.cpu()] = True
        if self._rows is not None:
            self._rows[index.to(self.device)] = rows.to(self.device)
            return
        raw = rows.detach().to("cpu").contiguous().reshape(rows.shape[0], self._row_numel).view(torch.uint8)
        try:
            for lo, hi, first in _runs(index):
                _write_all(self._file.fileno(), memoryview(raw[lo:hi].numpy().reshape(-1)), first * self._row_bytes)
        except OSError as exc:
            raise RuntimeError(
                f"could not write per-image records to a temporary file in {tempfile.gettempdir()} ({exc}); free "
                f"disk space there, point TMPDIR at a disk with room, or raise {RECORDS_ENV}"
            ) from exc

    def read(self, index: torch.Tensor) -> torch.Tensor:
        """The rows ``[B, *row_shape]`` at the evaluation positions ``index`` (long [B], any
        device), a copy on :attr:`device`.

        :raises RuntimeError: nothing was written yet (the row shape is unknown).
        :raises ValueError: some of the rows were never written."""
        if self.row_shape is None:
            raise RuntimeError("no rows were written yet")
        written = self.written(index.cpu())
        if not bool(written.all()):
            missing = index.cpu()[~written][:5].tolist()
            raise ValueError(f"rows never written: positions {', '.join(map(str, missing))}"
                             f"{' and more' if int((~written).sum()) > 5 else ''}")
        if self._rows is not None:
            return self._rows[index.to(self.device)]
        out = torch.empty((index.shape[0], *self.row_shape), dtype=self.dtype)
        raw = out.reshape(index.shape[0], self._row_numel).view(torch.uint8)
        for lo, hi, first in _runs(index):
            _read_exactly(self._file.fileno(), memoryview(raw[lo:hi].numpy().reshape(-1)), first * self._row_bytes)
        return out.to(self.device)

    def full(self) -> torch.Tensor:
        """Every row, ``[n_images, *row_shape]`` on :attr:`device`: the tensor itself while
        in memory, else all of them read from the file (what spilling avoids: read rows a
        batch at a time with :meth:`read` where you can).

        :raises ValueError: some row was never written."""
        if self._rows is not None and bool(self._written.all()):
            return self._rows
        return self.read(torch.arange(self.n_images))

    def close(self) -> None:
        """Let the temporary file go (it is unlinked already; closing frees its disk space)."""
        if self._file is not None:
            self._file.close()

    def __del__(self) -> None:  # the file's disk space goes with the store
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    """``data`` at ``offset`` of file ``fd``, however many calls it takes (a call writes at most
    about 2 GB on Linux)."""
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _read_exactly(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from ``offset`` of file ``fd`` (straight into it, no copy)."""
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:]], offset + done)
        if got == 0:
            raise OSError(f"the per-image records file ended at byte {offset + done}")
        done += got


def _runs(index: torch.Tensor) -> list[tuple[int, int, int]]:
    """``index`` (long [B]) cut into runs of consecutive positions: ``(lo, hi, first)`` says
    ``index[lo:hi]`` is ``first, first + 1, ...``. A batch is usually one run."""
    positions = index.detach().to("cpu").reshape(-1)
    if positions.numel() == 0:
        return []
    breaks = ((positions[1:] - positions[:-1]) != 1).nonzero().reshape(-1) + 1
    edges = [0, *breaks.tolist(), positions.numel()]
    firsts = positions[edges[:-1]].tolist()
    return [(lo, hi, first) for lo, hi, first in zip(edges[:-1], edges[1:], firsts)]
