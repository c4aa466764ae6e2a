"""Time feature inversion over several layers: sequential (one layer at a time) against batched
layers, stacked (every copy runs to the deepest layer) or dropped (each copy leaves the batch
once its own layer is reached), per step, per layer alone, and for the whole check.

    python benchmarks/bench_inversion.py                      # CPU, 3 models, 20 steps
    python benchmarks/bench_inversion.py --device cuda --steps 50 --repeats 5
    python benchmarks/bench_inversion.py --models resnet18 --images 4 --size 64

Random weights (nothing is downloaded): the cost does not depend on the values. The
strategies run interleaved round-robin, ``--repeats`` times, so load on a shared machine hits
them alike; the median is reported with the ratio to sequential. Memory is the autograd
graph's saved activations per step (every device) and the peak allocation (CUDA only).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torchvision
from torch import nn

import auditkit
from auditkit import Target
from auditkit.data.loaders import load_data
from auditkit.testing.models import TinyGAPNet
from auditkit_inversion.inversion import LayerTaps, Objective, invert, stack_layer_major
from auditkit_inversion.stages import default_stages

STRATEGIES = ("sequential", "stacked", "drop")
OBJECTIVE = Objective(lambda_tv=0.1, beta=2.0, lambda_alpha=0.1, alpha=6.0)


def plain_cnn(num_classes: int = 4) -> nn.Module:
    """A VGG-shaped CNN without skip connections: four conv blocks (16-128 channels, each
    halving the resolution), global average pooling, one linear layer: five stages."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (16, 32, 64, 128):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "tiny_gap": (lambda: TinyGAPNet(num_classes=4), 32),
    "plain_cnn": (plain_cnn, 64),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=4), 64),
}


def saved_activation_bytes(target: Target, layers: list[str], x: torch.Tensor, block: int, mode: str, params: set[int]) -> int:
    """Bytes the autograd graph keeps for one step's backward (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = x.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), LayerTaps(target, layers, block, mode) as taps:
        taps(x)
    return sum(seen.values())


def run_strategy(target: Target, images: torch.Tensor, layers: list[str], start: torch.Tensor, steps: int, strategy: str) -> float:
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    invert(target, images, layers, start, OBJECTIVE, steps=steps, lr=0.05, strategy=strategy)
    if images.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> None:
    make, default_size = MODELS[name]
    size = args.size or default_size
    torch.manual_seed(0)
    model = make()
    data = load_data(f"synthetic:shapes?n={max(args.images, 2)}&size={size}&classes=4&seed=0")
    images = next(data.batches("eval", args.images)).images.to(device)
    target = Target(model, device=device)
    with target:
        target.probe(images[:2])
        stages, _ = default_stages(model, target.layers, target.num_classes)
        layers = [s.name for s in stages]
        n = len(layers)
        start = (0.5 + 0.1 * torch.randn((n, *images.shape), generator=torch.Generator().manual_seed(0))).clamp(0, 1).to(device)
        print(f"\n{name}: {size}x{size}, {args.images} images, {n} layers ({', '.join(layers)}), {args.steps} steps")

        # One layer alone, per step: where the time goes.
        for i, layer in enumerate(layers):
            t = statistics.median(
                run_strategy(target, images, [layer], start[i : i + 1], args.steps, "sequential") for _ in range(args.repeats)
            )
            print(f"  {layer:<16} alone: {1e3 * t / args.steps:8.2f} ms/step")

        times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        peaks: dict[str, float] = {}
        for _ in range(args.repeats):
            for strategy in STRATEGIES:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times[strategy].append(run_strategy(target, images, layers, start, args.steps, strategy))
                if device.type == "cuda":
                    peaks[strategy] = torch.cuda.max_memory_allocated(device) / 2**20
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        b = images.shape[0]
        stacked_x = stack_layer_major(list(start))
        saved = {
            "sequential": max(saved_activation_bytes(target, [l], start[i], b, "stacked", params) for i, l in enumerate(layers)),
            "stacked": saved_activation_bytes(target, layers, stacked_x, b, "stacked", params),
            "drop": saved_activation_bytes(target, layers, stacked_x, b, "drop", params),
        }
    base = statistics.median(times["sequential"])
    for strategy in STRATEGIES:
        t = statistics.median(times[strategy])
        line = (
            f"  {strategy:<10} {1e3 * t / args.steps:8.2f} ms/step  {t / base:5.2f}x sequential  "
            f"saved activations {saved[strategy] / 2**20:7.2f} MiB ({saved[strategy] / saved['sequential']:4.2f}x)"
        )
        if strategy in peaks:
            line += f"  peak {peaks[strategy]:8.1f} MiB"
        print(line)


def bench_check(args: argparse.Namespace, device: torch.device) -> None:
    """The whole check through the public API (reference pass, metrics, artifacts included)."""
    data = load_data("synthetic:shapes?n=8&size=32&classes=4&seed=0")
    times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for _ in range(args.repeats):
        for strategy in STRATEGIES:
            torch.manual_seed(0)
            model = TinyGAPNet(num_classes=4)
            t0 = time.perf_counter()
            run = auditkit.audit(
                model, data, checks=["inversion.fidelity"], device=str(device), max_images=4,
                settings={"inversion.fidelity": {"strategy": strategy}},
            )
            times[strategy].append(time.perf_counter() - t0)
            assert run["inversion.fidelity"].outcome is not auditkit.Outcome.ERROR, run["inversion.fidelity"].message
    base = statistics.median(times["sequential"])
    print("\nwhole check inversion.fidelity (TinyGAPNet, 32x32, 4 images, default 200 steps)")
    for strategy in STRATEGIES:
        t = statistics.median(times[strategy])
        print(f"  {strategy:<10} {t:7.2f} s  {t / base:5.2f}x sequential")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="image side (default: per model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-check", action="store_true", help="skip timing the whole check")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; expected some of {', '.join(MODELS)}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}")
    for name in args.models.split(","):
        bench_model(name, args, device)
    if not args.no_check:
        bench_check(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
