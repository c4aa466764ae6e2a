"""Speed of whitebox.pgd's attack loop against a minimal hand-written PGD loop and against
torchattacks called directly: same model, same batch, one process, interleaved repeats.

    python benchmarks/bench_whitebox.py                     # CPU: a small CNN, 32x32, batch 64
    python benchmarks/bench_whitebox.py --device cuda       # CUDA: resnet18 (random weights), 224x224, batch 128

Every variant runs the same PGD (Linf, eps 8/255, steps of eps/4, random start) and scores
its adversarial images with one forward pass, so the rows do the same work. The
``loss.backward()`` row is the naive loop that also computes weight gradients, for reference.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from auditkit import Target
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD
from auditkit.testing.models import TinyGAPNet
from auditkit.attacks import LogitsModule
from auditkit_whitebox.attacks import AttackSpec, run_attack


class Normalized(nn.Module):
    """The model with ImageNet normalization in front, as a torchattacks user would wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def pgd_autograd_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int):
    """The minimal PGD loop: gradient with respect to the input only."""
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv


def pgd_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int):
    """The naive PGD loop: loss.backward(), which also fills every weight's .grad."""
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(adv), y).backward()
        adv = torch.min(torch.max(adv.detach() + alpha * adv.grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    return adv


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Seconds and peak extra CUDA memory (MiB; 0 on CPU) of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return time.perf_counter() - t0, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--model", choices=["small", "resnet18"], default=None,
                        help="default: small on CPU, resnet18 on CUDA")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 128 on CUDA")
    parser.add_argument("--size", type=int, default=None, help="image side; default 32 (small) or 224 (resnet18)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    model_name = args.model or ("resnet18" if device.type == "cuda" else "small")
    batch = args.batch or (128 if device.type == "cuda" else 64)
    size = args.size or (224 if model_name == "resnet18" else 32)
    torch.manual_seed(0)
    if model_name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None, num_classes=10)
    else:
        model = TinyGAPNet(num_classes=10, width=32)
    model = model.to(device).eval()
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    eps, steps = 8 / 255, args.steps
    alpha = eps / 4

    normalized = Normalized(model).to(device).eval()
    target = Target(model, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device)
    module = LogitsModule(target)
    spec = AttackSpec("pgd", "linf", steps=steps, rel_step_size=alpha / eps, random_start=True)

    def score(adv: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return normalized(adv).argmax(1) != y

    variants: dict[str, Callable[[], object]] = {
        "whitebox.pgd (run_attack)": lambda: run_attack(module, spec, x, y, eps).success,
        "hand-written, autograd.grad": lambda: score(pgd_autograd_grad(normalized, x, y, eps, alpha, steps)),
        "torchattacks.PGD direct": lambda: score(torchattacks.PGD(normalized, eps, alpha, steps, True)(x, y)),
        "hand-written, loss.backward()": lambda: score(pgd_backward(normalized, x, y, eps, alpha, steps)),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    memory: dict[str, float] = {k: 0.0 for k in variants}
    with target:
        for fn in variants.values():  # warm-up: kernels, allocator, lazy init
            fn()
        for _ in range(args.repeats):  # interleaved, so drift and neighbours' load hit every variant alike
            for name, fn in variants.items():
                seconds, mib = measure(fn, device)
                times[name].append(seconds)
                memory[name] = max(memory[name], mib)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"PGD Linf 8/255, {steps} steps, {model_name}, batch {batch} x 3x{size}x{size}, {where}, "
          f"{args.repeats} interleaved repeats (torch {torch.__version__}, torchattacks {torchattacks.__version__})")
    # The minimum is the run least disturbed by other processes (timeit's advice); the median is
    # shown too, since on a shared machine their gap tells how noisy the numbers are.
    best = {name: min(t) for name, t in times.items()}
    mid = {name: statistics.median(t) for name, t in times.items()}
    reference = "hand-written, autograd.grad"
    for name in variants:
        mem = f"  peak {memory[name]:7.1f} MiB" if device.type == "cuda" else ""
        print(f"  {name:32s} min {best[name] * 1e3:9.1f} ms ({best[name] / best[reference]:4.2f}x)  "
              f"median {mid[name] * 1e3:9.1f} ms ({mid[name] / mid[reference]:4.2f}x){mem}")
    plugin, direct = "whitebox.pgd (run_attack)", "torchattacks.PGD direct"
    for other in (direct, reference):
        print(f"  ratio whitebox.pgd / {other}: min {best[plugin] / best[other]:.3f}, "
              f"median {mid[plugin] / mid[other]:.3f}  (goal <= 1.1)")

if __name__ == "__main__":
    main()
