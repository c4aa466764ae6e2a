"""Where a process's memory goes as the number of images grows: one audit in this process.

Runs the audit of ``bench_distributed.py`` (its checks, the tiny model, ``--baselines none``)
through ``auditkit.audit`` on each size's ImageFolder of shapes (``bench_distributed.py
--folders DIR --make-folders`` writes them; ``--make-folders`` here does the same), one
fresh process per size, and prints after each check: the resident memory now and at its peak
(MiB, from /proc and getrusage), the bytes of every tensor alive (walked with the garbage
collector: what the audit keeps, the shared maps and gradients among it) with the three
largest shapes, and with ``--python-heap`` the bytes of Python's own heap (tracemalloc; slow).
The difference between two sizes, check by check, says what grows with the images, and how
much of it is tensors the audit keeps.

    python benchmarks/bench_memory.py --folders /tmp/shapes --sizes 64 4096
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/bench_memory.py --folders /tmp/shapes --sizes 64 4096

``--every K`` also prints the peak every K batches of the checks, to see whether a check's
memory levels off as its batches go by; an allocator put in front with ``LD_PRELOAD`` (jemalloc,
tcmalloc) is named in the first line. An ImageFolder lists its files class by class, so a
model that gets one class right attacks a block of whole batches and none elsewhere.

``--classes 1000`` gives the tiny model ImageNet's 1,000 outputs (the records of the clean
pass's scores then weigh 4 KB an image, as for an ImageNet model); run it with
``AUDITKIT_RECORDS_IN_MEMORY=0`` to keep every per-image record in a temporary file instead.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import gc
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distributed import CHECKS, make_folders  # noqa: E402


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _live_tensors() -> tuple[int, list[tuple[tuple[int, ...], int]]]:
    """Bytes of the storages of every tensor the garbage collector sees (parameters aside;
    a storage shared by several views counted once), and the three shapes holding most."""
    import torch

    seen: set[int] = set()
    total, by_shape = 0, collections.Counter()
    for obj in gc.get_objects():
        try:
            if not torch.is_tensor(obj) or isinstance(obj, torch.nn.Parameter):
                continue
            storage = obj.untyped_storage()
        except Exception:  # noqa: BLE001 - an object that only looks like a tensor
            continue
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
        by_shape[tuple(obj.shape)] += storage.nbytes()
    return total, by_shape.most_common(3)


def wide_factory():
    """The tiny model with ``BENCH_MEMORY_CLASSES`` outputs (``--classes``)."""
    from auditkit.testing.models import tiny_factory

    return tiny_factory(int(os.environ["BENCH_MEMORY_CLASSES"]))


def _trace_batches(every: int) -> None:
    """Print the peak and resident memory before every ``every``-th batch of a check: the
    memory a check needs as its batches go by, whether it levels off or keeps rising. Hooked
    where ``AuditContext.batches`` gives free heap pages back before each batch."""
    import auditkit.context

    release = auditkit.context.release_free_heap
    count = 0

    def traced(*args, **kwargs):
        nonlocal count
        count += 1
        if count % every == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"    batch {count:6d}  resident {_resident_mib():7.1f}  peak {peak:7.1f}", flush=True)
        return release(*args, **kwargs)

    auditkit.context.release_free_heap = traced


def measure(folder: str, checks: str, python_heap: bool, every: int = 0) -> None:
    """The audit of ``folder`` in this process, a line per check (with ``every``, also a line
    every that many batches of the checks, counted across them)."""
    import pluggy

    import auditkit

    if every:
        _trace_batches(every)
    if python_heap:
        import tracemalloc

        tracemalloc.start()
    hookimpl = pluggy.HookimplMarker("auditkit")

    class Probe:
        @hookimpl
        def auditkit_log_result(self, result):
            gc.collect()
            tensors, top = _live_tensors()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            heap = ""
            if python_heap:
                import tracemalloc

                heap = f"  python heap {tracemalloc.get_traced_memory()[0] / 2**20:7.1f} MiB"
            shapes = ", ".join(f"{list(s)} {b / 2**20:.1f}" for s, b in top)
            print(f"  {result.check:24s} resident {_resident_mib():7.1f}  peak {peak:7.1f}  "
                  f"live tensors {tensors / 2**20:7.2f} MiB ({shapes}){heap}", flush=True)

    model = "bench_memory:wide_factory" if os.environ.get("BENCH_MEMORY_CLASSES") else "auditkit.testing.models:tiny_factory"
    auditkit.audit(model, folder, checks=checks.split(","), plugins=[Probe()],
                   baselines=[], device="cpu")
    print(f"  {'end':24s} resident {_resident_mib():7.1f}  peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", required=True, help="DIR holding one ImageFolder per size, DIR/<n>")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--size", type=int, default=32, help="image side, with --make-folders")
    parser.add_argument("--checks", default=CHECKS)
    parser.add_argument("--make-folders", action="store_true", help="first write the shapes of each size")
    parser.add_argument("--classes", type=int, default=None, help="outputs of the tiny model (default: the 4 of the shapes)")
    parser.add_argument("--python-heap", action="store_true", help="also trace Python's heap (several times slower)")
    parser.add_argument("--every", type=int, default=0, metavar="K",
                        help="also print the peak every K batches of the checks (counted across them)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a size's folder, measured in this process
    args = parser.parse_args()
    if args.one:
        measure(args.one, args.checks, args.python_heap, args.every)
        return
    if args.make_folders:
        # in a child of its own: a process's peak resident memory is inherited across fork and
        # exec, so making the images here would raise every measured process's peak
        child = multiprocessing.get_context("spawn").Process(target=make_folders, args=(args.folders, args.sizes, args.size))
        child.start()
        child.join()
    if args.classes:
        os.environ["BENCH_MEMORY_CLASSES"] = str(args.classes)
    allocator = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    records = os.environ.get("AUDITKIT_RECORDS_IN_MEMORY", "default (64 MiB)")
    print(f"checks {args.checks}; classes {args.classes or 4}; allocator settings {allocator or 'default'}; "
          f"records in memory up to {records}; MiB")
    for n in sorted(args.sizes):
        print(f"{n} images:", flush=True)
        extra = (["--python-heap"] if args.python_heap else []) + (["--every", str(args.every)] if args.every else [])
        subprocess.run([sys.executable, __file__, "--folders", args.folders, "--checks", args.checks,
                        "--one", os.path.join(args.folders, str(n)), *extra], check=True)


if __name__ == "__main__":
    main()
