"""Time the three Grad-CAM checks and cam.consistency on ResNet-18 with the Grad-CAM work shared
between them (``AuditContext.shared``: one layer probe, one map per evaluation image) and with a
fresh store per check (every check probes and computes its own maps, as before the sharing).

    python benchmarks/gradcam_sharing.py                     # 224x224, 8 images, CPU or CUDA
    python benchmarks/gradcam_sharing.py --images 16 --repeats 3 --device cuda

Random weights (nothing is downloaded). Both variants run in one process after an unmeasured
warm-up audit, repeats interleaved (alternating which goes first); each reports its wall time
per check (medians), the time spent in the work that is shared (layer probes and the
evaluation images' maps), and the images that pass through the chosen layer (``layer4``) of
the audited model with gradients on (Grad-CAM passes; the layer probes are counted apart).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
import torchvision

import auditkit
import auditkit_gradcam.maps
from auditkit.context import AuditContext
from auditkit.testing.passes import CurrentCheck

# cam.consistency first, as in a default audit (checks run sorted by id): its identity pass fills
# the maps the Grad-CAM checks read
CHECKS = ["cam.consistency", "gradcam.localization", "gradcam.faithfulness", "gradcam.randomization"]


class LayerPasses(CurrentCheck):
    """Images through ``layer`` of the audited model with gradients on, per check, and layer
    probes: registered as a plugin, its ``auditkit_run_check`` wrapper says which check runs."""

    def __init__(self, layer: torch.nn.Module):
        self.layer = layer
        self.probing = False
        self.images: Counter[str] = Counter()
        self.probes = 0
        self.seconds = 0.0  # in layer probes and in the evaluation images' maps (what is shared)

    def hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        # randomization's deep copies carry the hook along: count the audited model only
        if module is self.layer and self.check and not self.probing and torch.is_grad_enabled():
            self.images[self.check] += int(output.shape[0])



@contextmanager
def counted_shared_work(passes: LayerPasses) -> Iterator[None]:
    """Count the layer probes, and time them and the evaluation images' maps."""
    choose_layer = auditkit_gradcam.maps.choose_layer
    evaluation_maps = auditkit_gradcam.maps.Explainer.evaluation_maps

    def counting(*args: Any, **kwargs: Any) -> Any:
        passes.probes += 1
        passes.probing = True
        t0 = time.perf_counter()
        try:
            return choose_layer(*args, **kwargs)
        finally:
            passes.seconds += time.perf_counter() - t0
            passes.probing = False

    def timed(self: Any, batch: Any) -> torch.Tensor:
        t0 = time.perf_counter()
        try:
            maps = evaluation_maps(self, batch)
            if maps.is_cuda:
                torch.cuda.synchronize()
            return maps
        finally:
            passes.seconds += time.perf_counter() - t0

    auditkit_gradcam.maps.choose_layer = counting
    auditkit_gradcam.maps.Explainer.evaluation_maps = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        auditkit_gradcam.maps.choose_layer = choose_layer
        auditkit_gradcam.maps.Explainer.evaluation_maps = evaluation_maps  # type: ignore[method-assign]


@contextmanager
def fresh_store_per_check() -> Iterator[None]:
    """Every ``ctx.shared`` call computes its value anew: no check reads another's work."""
    shared = AuditContext.shared
    AuditContext.shared = lambda self, key, compute: compute()  # type: ignore[method-assign]
    try:
        yield
    finally:
        AuditContext.shared = shared  # type: ignore[method-assign]


def audit_once(args: argparse.Namespace, sharing: bool) -> tuple[dict[str, float], LayerPasses, dict[str, dict]]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    passes = LayerPasses(model.layer4)
    handle = model.layer4.register_forward_hook(passes.hook)
    data = f"synthetic:shapes?n={args.images}&size={args.size}"
    settings = {"gradcam.faithfulness": {"steps": args.steps}}
    try:
        with counted_shared_work(passes), (nullcontext() if sharing else fresh_store_per_check()):
            run = auditkit.audit(model, data, checks=CHECKS, settings=settings, plugins=[passes],
                                 device=args.device, seed=0, batch_size=args.batch)
    finally:
        handle.remove()
    seconds = {check: run[check].duration_s for check in CHECKS}
    return seconds, passes, {check: dict(run[check].metrics) for check in CHECKS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="gradcam.faithfulness steps (its default: 20)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    times: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    shared_work: dict[bool, list[float]] = {True: [], False: []}
    passes: dict[bool, LayerPasses] = {}
    metrics: dict[bool, dict[str, dict]] = {}
    audit_once(args, True)  # warm-up, not measured: first calls, allocator, thread pool
    t0 = time.perf_counter()
    for repeat in range(args.repeats):
        for sharing in ((False, True) if repeat % 2 == 0 else (True, False)):
            seconds, passes[sharing], metrics[sharing] = audit_once(args, sharing)
            times[sharing].append(seconds)
            shared_work[sharing].append(passes[sharing].seconds)
            print(f"repeat {repeat + 1}, {'shared' if sharing else 'fresh store'}: four checks {sum(seconds.values()):.2f} s, "
                  f"probes and evaluation maps {passes[sharing].seconds:.2f} s", flush=True)

    print(f"resnet18 {args.size}x{args.size}, {args.images} images, batch {args.batch}, faithfulness steps {args.steps}, "
          f"{args.device}, {torch.get_num_threads()} threads, {args.repeats} repeat(s), {time.perf_counter() - t0:.0f} s in all; "
          "medians:")
    print(f"{'check':24s} {'fresh store':>12s} {'shared':>12s}   Grad-CAM image passes (fresh -> shared)")
    for check in CHECKS:
        med = {s: statistics.median(t[check] for t in times[s]) for s in (False, True)}
        print(f"{check:24s} {med[False]:10.2f} s {med[True]:10.2f} s   {passes[False].images[check]} -> {passes[True].images[check]}")
    total = {s: statistics.median(sum(t.values()) for t in times[s]) for s in (False, True)}
    work = {s: statistics.median(shared_work[s]) for s in (False, True)}
    images = {s: sum(passes[s].images.values()) for s in (False, True)}
    print(f"{'all four':24s} {total[False]:10.2f} s {total[True]:10.2f} s   {images[False]} -> {images[True]}")
    print(f"{'probes + evaluation maps':24s} {work[False]:10.2f} s {work[True]:10.2f} s   "
          f"layer probes {passes[False].probes} -> {passes[True].probes}")
    print(f"shared / fresh time: all four checks {total[True] / total[False]:.3f}, "
          f"probes and evaluation maps {work[True] / work[False]:.3f}")
    same = all(_same(metrics[True][c], metrics[False][c]) for c in CHECKS)
    print(f"metrics identical with and without sharing: {same}")
    return 0 if same else 1


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


if __name__ == "__main__":
    sys.exit(main())
