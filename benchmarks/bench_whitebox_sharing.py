"""Gradient passes and CPU time of ``--checks whitebox.*`` with the white-box checks' reuse of
work on and off, in one process: clean-point gradients shared across FGSM runs and with
whitebox.masking, and the minimal-epsilon search confined to the images that can move the
median (``auditkit_whitebox.gradients.REUSE``; off is how every attack ran before).

    python benchmarks/bench_whitebox_sharing.py                   # both models, 3 interleaved repeats, 1 thread
    python benchmarks/bench_whitebox_sharing.py --repeats 5 --threads 2

Models (nothing is downloaded): ``tiny``, ``auditkit.testing.models:tiny_factory`` untrained
(seeded), on ``synthetic:shapes?n=32&size=32`` as in the issue's command, and ``trained``, a
TinyGAPNet trained for a few seconds on the shapes' train split (64 evaluation images at 32
px), whose smallest fooling budgets spread like a real model's. Each audit counts, per check,
the images that go through a backward pass of the model (gradient passes) and how many of
them were at a clean evaluation image (clean-point gradients), and its CPU time
(``time.process_time``). The metrics of both variants must be identical; the script stops if not.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import Any

import torch
from torch import nn

import auditkit
from auditkit.data.synthetic import make_shapes
from auditkit.testing.models import TinyGAPNet, tiny_factory
from auditkit_whitebox import gradients

CHECKS = ["whitebox.fgsm", "whitebox.pgd", "whitebox.masking"]


class Passes(nn.Module):
    """The model, counting per check the images through a backward pass, those at a clean
    point, and the check's CPU time (registered as a plugin for the ``auditkit_run_check``
    wrapper that says which check runs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.check: str | None = None
        self.clean: set[bytes] = set()
        self.backward: Counter[str] = Counter()
        self.clean_points: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.check is None:
            self.clean.update(r.numpy().tobytes() for r in x.detach().cpu())
        elif out.requires_grad:
            check, rows = self.check, [r.numpy().tobytes() for r in x.detach().cpu()]

            def count(grad: torch.Tensor) -> None:
                self.backward[check] += len(rows)
                self.clean_points[check] += sum(row in self.clean for row in rows)

            out.register_hook(count)
        return out

    @auditkit.hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any) -> Any:
        _ = ctx.clean  # the clean pass, outside the check's count: its images are the clean points
        self.check = check.id
        t0 = time.process_time()
        try:
            return (yield)
        finally:
            self.cpu[check.id] += time.process_time() - t0
            self.check = None


def trained_model() -> tuple[nn.Module, Any]:
    data = make_shapes(n=64, n_train=512, size=32, seed=0)
    train = data.split("train")
    images = torch.stack([train[i]["image"] for i in range(len(train))])
    labels = torch.tensor([int(train[i]["label"]) for i in range(len(train))])
    torch.manual_seed(0)
    model = TinyGAPNet(num_classes=4, width=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.randint(0, len(images), (64,))
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), data


def audit(model: nn.Module, data: Any, reuse: bool) -> tuple[Passes, dict[str, Any], float]:
    gradients.REUSE = reuse
    passes = Passes(model)
    t0 = time.process_time()
    run = auditkit.audit(passes, data, checks=CHECKS, plugins=[passes])
    return passes, {r.check: r for r in run.results}, time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--models", default="tiny,trained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = {}
    if "tiny" in args.models:
        torch.manual_seed(0)
        cases["tiny"] = (tiny_factory(), "synthetic:shapes?n=32&size=32")
    if "trained" in args.models:
        cases["trained"] = trained_model()

    for name, (model, data) in cases.items():
        audit(model, data, True)  # warm-up: kernels, allocator, the data
        cpu: dict[bool, list[float]] = {True: [], False: []}
        per_check: dict[bool, dict[str, list[float]]] = {True: {}, False: {}}
        counts: dict[bool, Passes] = {}
        results: dict[bool, dict[str, Any]] = {}
        for i in range(args.repeats):
            for reuse in ((False, True) if i % 2 == 0 else (True, False)):  # alternate which goes first
                passes, results[reuse], seconds = audit(model, data, reuse)
                counts[reuse] = passes
                cpu[reuse].append(seconds)
                for check in CHECKS:
                    per_check[reuse].setdefault(check, []).append(passes.cpu[check])
        gradients.REUSE = True
        for check in CHECKS:
            if results[True][check].metrics != results[False][check].metrics:
                raise SystemExit(f"{name} {check}: the metrics differ with and without reuse")
        attacked = int(results[True]["whitebox.fgsm"].metrics["n_attacked"])
        print(f"{name}: {attacked} attacked images of {int(results[True]['whitebox.fgsm'].metrics['n_images'])}, "
              f"{args.threads} thread(s), medians of {args.repeats} interleaved repeats; metrics identical")
        print(f"  {'check':18s} {'gradient passes / image':>26s} {'clean-point / image':>22s} {'CPU s':>18s}")
        for check in CHECKS:
            n = max(attacked, 1)
            b, a = counts[False], counts[True]
            cb, ca = statistics.median(per_check[False][check]), statistics.median(per_check[True][check])
            print(f"  {check:18s} {b.backward[check] / n:11.1f} -> {a.backward[check] / n:6.1f} ({a.backward[check] / max(b.backward[check], 1):4.2f}x)"
                  f" {b.clean_points[check] / n:9.1f} -> {a.clean_points[check] / n:5.1f}"
                  f" {cb:7.2f} -> {ca:6.2f} ({ca / cb:4.2f}x)")
        total_b, total_a = sum(counts[False].backward.values()), sum(counts[True].backward.values())
        mb, ma = statistics.median(cpu[False]), statistics.median(cpu[True])
        print(f"  {'whitebox.* audit':18s} {total_b / max(attacked, 1):11.1f} -> {total_a / max(attacked, 1):6.1f} "
              f"({total_a / total_b:4.2f}x) {'':21s} {mb:7.2f} -> {ma:6.2f} ({ma / mb:4.2f}x)")


if __name__ == "__main__":
    main()
