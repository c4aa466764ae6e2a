"""Time occlusion.localization's maps against captum's Occlusion called directly and the bare floor
(the same forward passes with no occlusion bookkeeping) on ResNet-18, in one process.

    python benchmarks/bench_occlusion.py                  # 64x64, 8 images, CPU or CUDA
    python benchmarks/bench_occlusion.py --size 224 --device cuda --repeats 10

Random weights (nothing is downloaded): the cost of occlusion does not depend on the values.
Every row computes the maps of the same images for the same classes with the check's default
grid (a window of 1/8 of the side, stride half the window: 225 positions, 226 queries per image)
and the same number of occluded copies per call. Rows run ``--repeats`` times, interleaved
round-robin so that load on a shared machine hits every row alike; the median is reported, with
ratios to captum called directly. The last row is the whole check through ``auditkit.audit``
(clean pass, maps, scoring, Grad-CAM agreement), timed once per repeat, for scale.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Callable

import torch
import torchvision

import auditkit
from auditkit import AuditData, Target, TensorSplit
from auditkit_occlusion.maps import baseline_colours, occlusion_grid, occlusion_maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--perturbations", type=int, default=16, help="occluded copies per call (the check's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from captum.attr import Occlusion

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(device)
    x = torch.rand(args.images, 3, args.size, args.size, device=device)
    classes = torch.randint(0, 10, (args.images,), device=device)
    target = Target(model, device=device)  # mean 0 / std 1: the same input reaches the model
    target.probe(x[:2])
    grid = occlusion_grid(args.size, args.size, 1 / 8, 1 / 2)
    p = args.perturbations
    c = x.shape[1]

    def scores(images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(images), dim=1)

    @torch.no_grad()
    def floor() -> object:
        # The forward passes occlusion cannot avoid, in the same batches: the image once, then
        # every position, p copies of each image per call. The copies are not even occluded.
        out = scores(x)
        for start in range(0, grid.positions, p):
            n = min(p, grid.positions - start)
            out = scores(x.repeat(n, 1, 1, 1))
        return out

    def captum_direct() -> object:
        return Occlusion(scores).attribute(
            x, sliding_window_shapes=(c, grid.window, grid.window), strides=(c, grid.stride, grid.stride),
            baselines=x.mean(dim=(2, 3), keepdim=True), target=classes, perturbations_per_eval=p,
        )[:, 0]

    def check_maps() -> object:
        return occlusion_maps(target.query, x, classes, grid, baseline_colours(x, "mean"), p)

    boxes = torch.tensor([[args.size / 4, args.size / 4, 3 * args.size / 4, 3 * args.size / 4]]).repeat(args.images, 1)
    data = AuditData("bench", TensorSplit(x.cpu(), classes.cpu(), boxes), num_classes=10, has_boxes=True)

    def whole_check() -> object:
        return auditkit.audit(
            model, data, checks=["occlusion.localization"], device=str(device), batch_size=args.images,
            settings={"occlusion.localization": {"perturbations_per_eval": p, "max_images": args.images}},
        )

    rows: dict[str, Callable[[], object]] = {
        "floor (the same forward passes)": floor,
        "captum Occlusion, called directly": captum_direct,
        "auditkit occlusion maps (the check's)": check_maps,
        "occlusion.localization end to end": whole_check,
    }

    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    expected = check_maps()
    assert (expected - captum_direct()).abs().max() <= 1e-6, "the check's maps differ from captum's"
    before = target.queries
    check_maps()
    queries = target.queries - before
    assert queries == args.images * grid.queries_per_image, (queries, grid)

    for _ in range(args.warmup):
        for fn in rows.values():
            timed(fn)
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, fn in rows.items():
            times[name].append(timed(fn))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"resnet18, {args.images} images at {args.size}x{args.size}, {grid.describe()}, {queries:,} queries, "
          f"{p} copies per call, {where}, torch {torch.__version__}, median of {args.repeats} interleaved runs")
    reference = statistics.median(times["captum Occlusion, called directly"])
    print(f"{'row':<40} {'median s':>9} {'min s':>8} {'images/s':>9} {'x captum':>9}")
    for name, samples in times.items():
        med = statistics.median(samples)
        rate = queries / med if not math.isclose(med, 0.0) else math.inf
        print(f"{name:<40} {med:>9.3f} {min(samples):>8.3f} {rate:>9.0f} {med / reference:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
