"""Sharded audits: one process against N processes started by torchrun, in one run.

Runs the same audit command as one process and as ``--nproc`` processes (``torchrun
--standalone``, gloo on the CPU or NCCL on GPUs), at two or more evaluation-set sizes, and
prints per run the wall time, the CPU time of all processes (user + system), the peak resident
memory of the largest process, and whether the N-process report equals the one-process report
metric for metric. Peak memory at the larger size against the smaller says whether a process's
memory grows with the number of images.

    python benchmarks/bench_distributed.py                       # tiny model, 2 processes, n=64 and 256
    python benchmarks/bench_distributed.py --sizes 128 512 --nproc 2 --model torchvision:resnet18 --size 64
    python benchmarks/bench_distributed.py --sizes 64 1024 --folders /tmp/shapes --make-folders   # images read from disk

On one 2-core CPU, N processes share the same two cores a one-process run uses with two
threads: the wall time shows the overhead of the processes and their merges, not the speed-up
of N machines (which is what N GPUs give).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# every check that shards, and accuracy.clean (rank 0); transfer.proxy and inversion.fidelity
# run on rank 0 only and would time one process in both runs
CHECKS = "accuracy.clean,gradcam.*,cam.consistency,occlusion.localization,whitebox.*"


# Runs one command and prints the peak RSS (KiB) of its largest descendant: a fresh process per
# run, so that the running maximum of RUSAGE_CHILDREN covers that run alone.
_WRAP = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(done.returncode)"
)


def run(nproc: int, model: str, data: str, checks: str, threads: int, cwd: str, out: str) -> dict:
    """One audit: wall and CPU seconds, peak RSS (MiB) of the largest process, the report."""
    args = ["-m", "auditkit", "run", "--model", model, "--data", data, "--baselines", "none", "--checks", checks,
            "--device", "cpu", "-q", "--no-progress", "--json", out]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAP, sys.executable, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not os.path.exists(out):
        raise SystemExit(f"the audit wrote no report (exit {done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_kib = int(done.stdout.strip().splitlines()[-1])  # the largest process of this run (KiB on Linux)
    return {"wall": wall, "cpu": cpu, "rss_mib": peak_kib / 1024, "report": json.load(open(out))}


def same(a: dict, b: dict) -> bool:
    key = lambda r: (r["check"], r["outcome"], r["metrics"], r["message"])
    return [key(r) for r in a["results"]] == [key(r) for r in b["results"]]


def make_folders(root: str, sizes: list[int], side: int) -> None:
    """The evaluation shapes of each size as PNG files in ROOT/<n>/<class>/, an ImageFolder
    that auditkit reads image by image."""
    from PIL import Image

    from auditkit.data.synthetic import make_shapes

    for n in sizes:
        data = make_shapes(n=n, n_train=0, size=side)
        for i, (image, label) in enumerate(zip(data.eval.images, data.eval.labels)):
            folder = os.path.join(root, str(n), data.class_names[int(label)])
            os.makedirs(folder, exist_ok=True)
            pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="auditkit.testing.models:tiny_factory")
    parser.add_argument("--size", type=int, default=32, help="image side of the synthetic shapes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="numbers of evaluation images")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--checks", default=CHECKS)
    parser.add_argument("--folders", default=None,
                        help="read each size's images from DIR/<n> (an ImageFolder on disk, made with --make-folders) "
                             "instead of generating synthetic shapes in every process")
    parser.add_argument("--make-folders", action="store_true",
                        help="first write the shapes of each size to --folders as PNG files, one folder per class")
    args = parser.parse_args()
    if args.make_folders:
        if not args.folders:
            raise SystemExit("--make-folders needs --folders DIR")
        make_folders(args.folders, args.sizes, args.size)
    print(f"{time.strftime('%Y-%m-%d')}  {os.uname().nodename}  {os.cpu_count()} CPUs  model {args.model}, "
          f"shapes at {args.size} px, checks {args.checks}")
    print(f"{'images':>7} {'processes':>9} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}  report")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.sizes):
            data = os.path.join(args.folders, str(n)) if args.folders else f"synthetic:shapes?n={n}&size={args.size}"
            one = run(1, args.model, data, args.checks, args.nproc, tmp, os.path.join(tmp, f"one{n}.json"))
            many = run(args.nproc, args.model, data, args.checks, 1, tmp, os.path.join(tmp, f"many{n}.json"))
            verdict = "identical" if same(one["report"], many["report"]) else "DIFFERS"
            for label, r in ((f"1 ({args.nproc} threads)", one), (f"{args.nproc} (1 thread)", many)):
                print(f"{n:>7} {label:>9} {r['wall']:>8.1f} {r['cpu']:>8.1f} {r['rss_mib']:>13.0f}  {verdict}")


if __name__ == "__main__":
    main()
