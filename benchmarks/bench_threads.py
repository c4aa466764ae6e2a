"""CPU threads and OpenMP's wait policy, on an idle and on a loaded machine, in one run.

Runs the same audit command (default: ``inversion.fidelity`` on a tiny model) as a separate
process under three settings, interleaved, and prints each one's wall time and CPU time
(user + system of the child) with ratios to the one-thread run:

- ``spinning``: torch's default thread count with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP workers
  spin between parallel regions; what a plain ``python -c 'import auditkit; ...'`` gets when
  the OpenMP runtime spins, and what the command did before it set a policy);
- ``passive``: torch's default thread count with ``OMP_WAIT_POLICY=PASSIVE`` (the command's
  default now);
- ``one thread``: ``--threads 1``.

``--load N`` starts N busy-loop processes (one per core makes a loaded machine, as a CI
runner with other jobs is) for the duration of the measurement.

    python benchmarks/bench_threads.py --repeats 3            # idle
    python benchmarks/bench_threads.py --repeats 3 --load 2   # both cores busy with other work
    # a whole default audit (every check) of ResNet-18 on 16 images, idle and loaded
    python benchmarks/bench_threads.py --model torchvision:resnet18 --checks "" \
        --data "synthetic:shapes?n=16&size=64" --repeats 2 [--load 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

def audit_args(model: str, data: str, checks: str) -> list[str]:
    """The ``auditkit`` arguments of the measured audit; ``checks`` "" runs every check."""
    selection = ["--checks", checks] if checks else []
    return ["run", "--model", model, "--data", data, "--baselines", "none", *selection, "-q", "--no-progress"]


SETTINGS = {
    "spinning": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "one thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", "1"]),
}


def _busy() -> None:
    while True:
        pass


def run_once(env_extra: dict[str, str], args: list[str], cwd: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one audit process."""
    env = {**os.environ, **env_extra}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "auditkit", *args, "--json", "r.json"], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL)
    if done.returncode not in (0, 1):  # 1: a check failed, which an untrained model's audit does
        raise SystemExit(f"the audit exited with {done.returncode}: {' '.join(args)}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="busy-loop processes running meanwhile")
    parser.add_argument("--data", default="synthetic:shapes?n=8&size=64")
    parser.add_argument("--checks", default="inversion.fidelity", help='"" runs every check (a default audit)')
    parser.add_argument("--model", default="auditkit.testing.models:tiny_factory")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated subset of: {', '.join(SETTINGS)} (always with 'one thread')")
    args = parser.parse_args()
    chosen = {name.strip() for name in args.settings.split(",")} | {"one thread"}
    if chosen - set(SETTINGS):
        parser.error(f"unknown settings {sorted(chosen - set(SETTINGS))}; choose from {', '.join(SETTINGS)}")
    settings = {name: value for name, value in SETTINGS.items() if name in chosen}
    audit = audit_args(args.model, args.data, args.checks)
    load = [mp.Process(target=_busy, daemon=True) for _ in range(args.load)]
    for p in load:
        p.start()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    try:
        with tempfile.TemporaryDirectory() as cwd:
            for _ in range(args.repeats):
                for name, (env_extra, extra_args) in settings.items():
                    times[name].append(run_once(env_extra, [*audit, *extra_args], cwd))
    finally:
        for p in load:
            p.terminate()
    print(f"{os.cpu_count()} cores, load: {args.load} busy processes, {args.repeats} repeats (median; min-max)")
    print("auditkit " + " ".join(audit))
    base_wall = statistics.median(w for w, _ in times["one thread"])
    base_cpu = statistics.median(c for _, c in times["one thread"])
    print(f"{'setting':<12} {'wall s':>18} {'CPU s':>18} {'wall / 1 thread':>16} {'CPU / 1 thread':>15}")
    for name, runs in times.items():
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        print(f"{name:<12} {wall:7.1f} ({min(walls):.1f}-{max(walls):.1f}) {cpu:7.1f} ({min(cpus):.1f}-{max(cpus):.1f}) "
              f"{wall / base_wall:16.2f} {cpu / base_cpu:15.2f}")


if __name__ == "__main__":
    main()
