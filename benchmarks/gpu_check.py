"""Every registered check at default settings on a 224 px torchvision model, twice: in the
default memory format and in channels_last. Prints each check's time, outcome, error and peak
GPU memory, and writes the figures as JSON. Run it whenever a GPU is lent; the figures go to
benchmarks/README.md ("GPU check").

    python benchmarks/gpu_check.py                                   # resnet50, 1000 images, cuda
    python benchmarks/gpu_check.py --images 64 --device cpu --model resnet18   # a smoke run on a CPU
    python benchmarks/gpu_check.py --out "$OUT/gpu_check.json"

The model is ``torchvision:<model>`` with seeded random weights sized to the data's classes (a
GPU machine may have no network for pretrained weights), on ``synthetic:shapes`` at 224 px.
No baselines: this measures the audit of one model. A check that errors is a finding of this
script, not a crash of it; the exit code is 1 when any check errored.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import auditkit
from auditkit.data.loaders import load_data
from auditkit.models.loaders import ModelOptions, load_model


class CheckMeter:
    """A plugin that records each check's wall time and peak GPU memory (reset before it runs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rows: dict[str, dict[str, float]] = {}

    @auditkit.hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any):
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            return (yield)
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            row = {"seconds": time.perf_counter() - t0}
            if cuda:
                row["peak_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.rows[check.id] = row


def run_once(args: argparse.Namespace, channels_last: bool) -> dict[str, Any]:
    device = torch.device(args.device)
    data = load_data(f"synthetic:shapes?n={args.images}&train={args.train}&size={args.size}&classes={args.classes}&seed=0")
    options = ModelOptions(num_classes=data.num_classes, device=str(device))
    torch.manual_seed(args.seed)
    target = load_model(f"torchvision:{args.model}", options)
    if channels_last:
        target.model.to(memory_format=torch.channels_last)
    meter = CheckMeter(device)
    t0 = time.perf_counter()
    run = auditkit.audit(target, data, device=str(device), seed=args.seed, plugins=[meter], batch_size=args.batch_size)
    total = time.perf_counter() - t0
    checks = []
    for r in run.results:
        row = {"check": r.check, "outcome": r.outcome.value, **meter.rows.get(r.check, {})}
        if r.outcome.value == "error":
            row["error"] = (r.message or "").splitlines()[0][:300]
        checks.append(row)
    return {"channels_last": channels_last, "total_seconds": total, "exit_code": run.exit_code, "checks": checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--train", type=int, default=1000, help="train-split images (the transfer proxy's seed set comes from it)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()

    env = {"python": platform.python_version(), "torch": torch.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    print(f"gpu_check: torchvision:{args.model}, {args.images} images at {args.size} px, {env}")
    runs = []
    for channels_last in (False, True):
        result = run_once(args, channels_last)
        runs.append(result)
        layout = "channels_last" if channels_last else "contiguous"
        print(f"\n{layout}: {result['total_seconds']:.1f} s in all, exit code {result['exit_code']}")
        print(f"  {'check':<24} {'outcome':<8} {'seconds':>8} {'peak MiB':>9}")
        for row in result["checks"]:
            peak = f"{row['peak_mib']:9.0f}" if "peak_mib" in row else f"{'-':>9}"
            print(f"  {row['check']:<24} {row['outcome']:<8} {row.get('seconds', float('nan')):8.2f} {peak}")
            if "error" in row:
                print(f"    error: {row['error']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"environment": env, "args": vars(args), "runs": runs}, indent=2))
    errored = any(row["outcome"] == "error" for run in runs for row in run["checks"])
    return 1 if errored else 0


if __name__ == "__main__":
    sys.exit(main())
