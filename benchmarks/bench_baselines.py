"""Time the baselines' training loop (``auditkit.baselines.training.train_classifier`` on a
stream of freshly generated shapes) against a plain training loop of the same architecture,
optimizer and schedule on images generated beforehand, in one process.

    python benchmarks/bench_baselines.py                          # CPU: 32 px, 16 steps of 128
    python benchmarks/bench_baselines.py --threads 1 --steps 4 --repeats 5
    python benchmarks/bench_baselines.py --device cuda            # 64 px, 100 steps of 128

The plain loop is what a person would write: the batches already on the device and
normalized, forward, loss (with GoogLeNet's auxiliary losses), zero_grad, backward, optimizer
and scheduler step; bf16 autocast and channels_last on CUDA, as auditkit uses. auditkit's loop
also generates every image while it trains (in a background thread), copies batches to the
device, normalizes them and checks the wall-time cap after every step. Repeats are interleaved
(auditkit, plain, auditkit, ...) so that load on a shared machine hits both alike; the first
repeat of each is a warm-up and is dropped. Reported: median images per second and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from auditkit.baselines import RECIPES, BaselineSpec, build
from auditkit.baselines.training import Budget, _loss, _optimizer, train_classifier
from auditkit.data.loaders import load_data
from auditkit.data.synthetic import shapes_stream
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD


def plain_loop(arch: str, images: torch.Tensor, labels: torch.Tensor, steps: int, device: torch.device) -> float:
    """Images per second of a minimal training loop on ``images`` already on the device."""
    recipe = RECIPES[arch]
    on_cuda = device.type == "cuda"
    model = build(BaselineSpec(arch, int(labels.max()) + 1, images.shape[-1]), aux_logits=True).to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = _optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=recipe.warmup_fraction)
    bs = recipe.batch_size
    if on_cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        x, y = images[step * bs : (step + 1) * bs], labels[step * bs : (step + 1) * bs]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            loss = _loss(model(x), y, recipe.aux_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    if on_cuda:
        torch.cuda.synchronize(device)
    return steps * bs / (time.perf_counter() - start)


def auditkit_loop(arch: str, data, steps: int, device: torch.device) -> float:
    """Images per second of auditkit's training loop (its own measurement of the loop alone,
    without the validation pass)."""
    model = build(BaselineSpec(arch, data.num_classes, data.image_shape[-1]), aux_logits=True)
    report = train_classifier(model, data, RECIPES[arch], Budget(steps=steps, max_seconds=1e9), device=device)
    return steps * RECIPES[arch].batch_size / report.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--archs", default="alexnet,googlenet,resnet18")
    parser.add_argument("--size", type=int, default=None, help="image side (default 32 on CPU, 64 on CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="steps per repeat (default 16 on CPU, 100 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each, after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    size = args.size or (64 if on_cuda else 32)
    steps = args.steps or (100 if on_cuda else 16)
    data = load_data(f"synthetic:shapes?n=8&train=64&size={size}&classes=4")
    stream = shapes_stream(data)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    print(f"device {device}, {size} px, {steps} steps of {RECIPES['resnet18'].batch_size} per repeat, "
          f"{args.repeats} repeats after a warm-up, torch threads {torch.get_num_threads()}")
    print(f"{'arch':<10} {'auditkit img/s':>15} {'plain img/s':>12} {'plain / auditkit':>17}")
    for arch in args.archs.split(","):
        n = steps * RECIPES[arch].batch_size
        fresh = stream.chunk("bench", n)
        images = ((fresh.images - mean) / std).to(device)
        if on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = fresh.labels.to(device)
        ours, plain = [], []
        for repeat in range(args.repeats + 1):
            a = auditkit_loop(arch, data, steps, device)
            b = plain_loop(arch, images, labels, steps, device)
            if repeat:
                ours.append(a)
                plain.append(b)
        mo, mp = statistics.median(ours), statistics.median(plain)
        print(f"{arch:<10} {mo:>15.1f} {mp:>12.1f} {mp / mo:>17.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
