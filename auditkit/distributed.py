"""Audits sharded across processes with PyTorch's own engine (``torch.distributed``), started
by ``torchrun``: ``torchrun --nproc-per-node=N -m auditkit run ...``.

torchrun starts N copies of the command and tells each its place through the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; see
https://pytorch.org/docs/stable/elastic/run.html). :func:`world_from_environment` reads them
and joins the process group: NCCL when the audit runs on CUDA, gloo on the CPU. Without those
variables (or with ``WORLD_SIZE=1``) the audit is one process, as always, and every helper
here is the identity.

How an audit divides (:class:`World`):

- The evaluation images are split by whole batches: batch ``b`` (of ``--batch-size``) belongs
  to rank ``b % N``. A batch is the same images on any number of processes, and a check that
  shards draws its random numbers afresh at each batch from (seed, check, model, batch
  number) (:func:`batch_seed`), so each image's result is the same whichever process computes
  it.
- The clean forward pass is computed that way and gathered: every process holds all N
  images' logits, as one process would.
- A check that declares ``shards = True`` runs on every process over its own batches and
  merges its tallies with :meth:`World.all_sum` and its per-image values with
  :meth:`World.gather_rows` (ordered by evaluation position), so rates, intervals and
  p-values are computed on the merged data. Any other check runs once, on rank 0. Every
  process ends each check with :meth:`World.finish` and keeps rank 0's result, so all keep the
  same results and the same exit code; a check that failed on one process only is an error
  on all (:class:`PeerFailed`), and the audit goes on.
- Rank 0 alone prints and writes the reports, and carries the audit's exit code.
"""
from __future__ import annotations

import datetime
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from auditkit.errors import UsageError

T = TypeVar("T")

# How long a process waits for the others at a collective before the audit fails: rank 0 runs
# the checks that do not shard while the others wait, so this bounds the longest such check.
DEFAULT_TIMEOUT_S = 4 * 3600

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# The kinds of message a process sends at a collective: a merge's payload, or the end of its step.
_MERGE, _FINISH = "merge", "finish"


class PeerFailed(RuntimeError):
    """Another process of the audit ended the step (a check) this process waits in, at one of
    its merges: it failed, so this process's share cannot be merged either."""


@dataclass(frozen=True)
class World:
    """The processes of one audit: ``rank`` of ``size`` (``local_rank`` on this node), joined
    through ``backend`` ("gloo" or "nccl"; None for one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    created_group: bool = False  # joined by auditkit (left at the end), not by the caller's program

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, writes the reports and runs unsharded checks."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def owns_batch(self, number: int) -> bool:
        """Whether batch ``number`` (0-based, in evaluation order) is this process's."""
        return number % self.size == self.rank

    def n_batches(self, total: int) -> int:
        """How many of ``total`` batches are this process's."""
        return len(range(self.rank, total, self.size))

    # -- collectives (the identity for one process) -----------------------------------------
    #
    # Every collective is one exchange of (kind, payload) among all processes. A process whose
    # step (a check) ended, normally or with an error, says so with :meth:`finish`; a process
    # still waiting at one of that step's merges then sees the end instead of a payload and
    # raises :class:`PeerFailed`, which ends its step too. So a check that fails on one
    # process only is an error on every process, and the audit goes on, instead of a hang.

    def all_sum(self, value: T) -> T:
        """``value`` (a number, or a tensor) summed over the processes in rank order; the same
        on every process. Integers stay exact.

        :raises PeerFailed: another process ended this step instead of merging."""
        if not self.distributed:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
            raise TypeError(f"all_sum takes a number or a tensor, not {type(value).__name__}")
        parts = self._collect(value)
        if isinstance(value, torch.Tensor):
            total = parts[0].to(value.device)
            for part in parts[1:]:
                total = total + part.to(value.device)
            return total  # type: ignore[return-value]
        return type(value)(sum(parts))  # type: ignore[return-value]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable; tensors go to the CPU first), in rank order.

        :raises PeerFailed: another process ended this step instead of merging."""
        if not self.distributed:
            return [obj]
        return self._collect(obj)

    def gather_ordered(self, keyed: Sequence[tuple[int, T]]) -> list[T]:
        """Every process's ``(key, payload)`` pairs, the payloads in key order (keys unique
        across processes: a batch's first evaluation position, say): per-batch results put
        back in the order one process making every batch would have made them.

        :raises PeerFailed: another process ended this step instead of merging."""
        pairs = [pair for part in self.all_gather(list(keyed)) for pair in part]
        return concat_sorted(pairs)

    def gather_rows(self, index: torch.Tensor, rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-image values from every process, ordered by evaluation position.

        ``index``: long [R], the evaluation positions of this process's rows; ``rows``: name ->
        tensor [R, ...] in the same order (R may be 0 on some processes). Returns the positions
        [R_total] in increasing order and every name's rows [R_total, ...] in that order, on
        ``index``'s device: what one process that computed every row in evaluation order
        would hold."""
        if not self.distributed:
            return index, rows
        device = index.device
        parts = [p for p in self.all_gather((index, rows)) if p[0].numel()]  # a process may have none
        if not parts:
            return index, rows
        all_index = torch.cat([p[0] for p in parts])
        order = torch.argsort(all_index, stable=True)
        merged = {
            name: torch.cat([p[1][name] for p in parts])[order].to(device)
            for name in parts[0][1]  # this process's may be empty
        }
        return all_index[order].to(device), merged

    def broadcast(self, obj: T, src: int = 0) -> T:
        """``obj`` as process ``src`` has it (picklable), on every process.

        :raises PeerFailed: another process ended this step instead of merging."""
        if not self.distributed:
            return obj
        return self._collect(obj if self.rank == src else None)[src]  # type: ignore[no-any-return]

    def finish(self, result: Any, failure: str | None) -> tuple[Any, list[tuple[int, str]]]:
        """End one step (a check on one model) on every process: returns rank 0's ``result``
        and the failures every process reported (``(rank, what)``; ``failure`` is this
        process's, None when its step ended normally).

        A process that gets here while another still waits at one of the step's merges ends
        that wait (the other raises :class:`PeerFailed`) and waits until every process has
        finished the step."""
        if not self.distributed:
            return result, ([(0, failure)] if failure else [])
        mine = (failure, result if self.is_main else None)
        while True:
            messages = self._exchange(_FINISH, mine)
            if all(kind == _FINISH for kind, _ in messages):
                break
        failures = [(rank, payload[0]) for rank, (_, payload) in enumerate(messages) if payload[0]]
        return messages[0][1][1], failures

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            self._collect(None)

    def _exchange(self, kind: str, payload: Any) -> list[tuple[str, Any]]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, (kind, _to_cpu(payload)))
        return out

    def _collect(self, payload: Any) -> list[Any]:
        messages = self._exchange(_MERGE, payload)
        ended = [(rank, body) for rank, (kind, body) in enumerate(messages) if kind != _MERGE]
        if ended:
            raise PeerFailed(
                "; ".join(
                    f"process {rank} {'failed: ' + body[0] if body[0] else 'ended the check without this merge'}"
                    for rank, body in ended
                )
            )
        return [body for _, body in messages]


SINGLE = World()


def owned_indices(world: World, limit: int, batch_size: int) -> list[int]:
    """The evaluation positions of this process's batches among the first ``limit`` images in
    batches of ``batch_size``, in order: whole batches, so each batch is the one a single
    process would make."""
    out: list[int] = []
    for number in range(world.rank, -(-limit // batch_size), world.size):
        out.extend(range(number * batch_size, min((number + 1) * batch_size, limit)))
    return out


def batch_seed(seed: int, number: int, stream: int = 0) -> int:
    """The seed of batch ``number`` of a sharded check whose own seed is ``seed``
    (:func:`auditkit.seeding.check_seed`): the same batch draws the same numbers on any
    process. ``stream`` tells apart loops of one check over the same batches."""
    suffix = f":{stream}" if stream else ""
    return zlib.crc32(f"{seed}:batch:{number}{suffix}".encode()) & 0x7FFFFFFF


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether torchrun's variables say this process is one of several."""
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1") or 1) > 1


def other_rank(environ: dict[str, str] | None = None) -> bool:
    """Whether this is a process of a torchrun job other than rank 0: torchrun's variables all
    set, and RANK not 0. Such a process stays quiet (rank 0 prints and writes); a process with
    an incomplete environment (a stray ``RANK`` without torchrun) is no member of any job and
    says its own errors."""
    env = os.environ if environ is None else environ
    complete = launched_by_torchrun(dict(env)) and all(env.get(k) for k in _ENV)
    return complete and env.get("RANK", "0") not in ("", "0")


def world_from_environment(device: torch.device, environ: dict[str, str] | None = None) -> World:
    """The :class:`World` torchrun describes in the environment, with the process group
    joined (NCCL on CUDA, gloo on the CPU); :data:`SINGLE` when this is the only process.

    :raises UsageError: torchrun's variables incomplete or not integers, or CUDA asked with
        fewer devices on this node than local processes.
    """
    env = dict(os.environ if environ is None else environ)
    if not launched_by_torchrun(env):
        return SINGLE
    missing = [k for k in _ENV if not env.get(k)]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={env.get('WORLD_SIZE')} says this is one of several processes, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; start the audit "
            "with torchrun (torchrun --nproc-per-node=N -m auditkit run ...)"
        )
    try:
        rank, size, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    except ValueError as exc:
        raise UsageError(f"torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be integers: {exc}") from exc
    if not 0 <= rank < size:
        raise UsageError(f"RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size})")
    backend = "nccl" if device.type == "cuda" else "gloo"
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this PyTorch was built without torch.distributed; run the audit as one process")
    created = not dist.is_initialized()  # a program auditing inside its own torchrun job has joined already
    if created:
        raw = env.get("AUDITKIT_DIST_TIMEOUT_S") or str(DEFAULT_TIMEOUT_S)
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not seconds > 0:
            raise UsageError(f"AUDITKIT_DIST_TIMEOUT_S={raw!r}: expected a number of seconds above 0")
        timeout = datetime.timedelta(seconds=seconds)
        if backend == "nccl":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timeout)
    return World(rank=rank, size=size, local_rank=local, backend=backend, created_group=created)


def device_for_rank(device: torch.device, environ: dict[str, str] | None = None) -> torch.device:
    """Under torchrun, ``cuda`` without an index means this process's own GPU
    (``cuda:LOCAL_RANK``), as torchrun's examples use it; anything else is unchanged.

    :raises UsageError: fewer GPUs on this node than processes on it.
    """
    env = os.environ if environ is None else environ
    if device.type != "cuda" or device.index is not None or not launched_by_torchrun(dict(env)):
        return device
    local = int(env.get("LOCAL_RANK", "0") or 0)
    if local >= torch.cuda.device_count():
        raise UsageError(
            f"LOCAL_RANK={local} needs a GPU of its own, and this node has {torch.cuda.device_count()}: "
            "start at most that many processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", local)


def shutdown(world: World) -> None:
    """Leave the process group at the end of the audit, when the audit joined it (a group the
    caller's program made stays as it was)."""
    if world.distributed and world.created_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def concat_sorted(keyed: Sequence[tuple[int, Any]]) -> list[Any]:
    """Payloads of ``(key, payload)`` pairs in key order: per-batch results gathered from
    every process, put back in the order one process would have made them."""
    return [payload for _, payload in sorted(keyed, key=lambda kv: kv[0])]
