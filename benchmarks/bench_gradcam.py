"""Time auditkit's batched Grad-CAM against pytorch-grad-cam, captum and the bare floor (one
forward pass plus one backward pass to the target layer) on ResNet-18, or on a ViT or Swin
(timm) at the layer auditkit chooses, in one process.

    python benchmarks/bench_gradcam.py                 # 224x224, batch 8, CPU or CUDA
    python benchmarks/bench_gradcam.py --device cuda --repeats 50
    python benchmarks/bench_gradcam.py --arch vit_tiny_patch16_224   # tokens; needs timm
    python benchmarks/bench_gradcam.py --arch swin_tiny_patch4_window7_224

Random weights (nothing is downloaded): the cost of Grad-CAM does not depend on the values.
Each method runs ``--repeats`` times, interleaved round-robin so that load on a shared machine
hits every method alike; the median is reported, with ratios to the floor.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision

from auditkit import Target
from auditkit.layer_choice import choose_layer
from auditkit.saliency import grad_cam, upsample

ARCHS = ("resnet18", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")


def build(arch: str) -> torch.nn.Module:
    if arch == "resnet18":
        return torchvision.models.resnet18()
    import timm

    return timm.create_model(arch)


def reshape_transform(layout: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's documented reshape_transform for the layer's layout (its ViT tutorial
    drops the class token and reshapes to the patch grid; timm's Swin is channels last)."""
    kind, (h, w), prefix = layout.kind, layout.grid, layout.prefix_tokens
    if kind == "tokens":
        return lambda t: t[:, prefix:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)
    if kind == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    return None


def floor(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The least any Grad-CAM can do: one forward pass recording the layer's output and one
    backward pass from the class scores to that output, nothing else."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), store["a"])
    finally:
        handle.remove()
    return grad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", choices=ARCHS, default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(args.arch).eval().to(device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    classes = torch.randint(0, 1000, (args.batch,), device=device)
    target = Target(model, device=device)  # mean 0 / std 1: the same input reaches the model
    target.probe(x[:2])
    choice = choose_layer(target, x[:2])  # layer4 for ResNet-18; the last block's norm1 for a ViT
    layer_name = choice.name
    layer = target.layer(layer_name)
    transform = reshape_transform(choice.grid_layout)

    pgc_targets = [ClassifierOutputTarget(int(c)) for c in classes]
    # captum's LayerGradCam averages gradients over dims 2.. of the layer's output: right for
    # [B,C,h,w], not for tokens [B,N,C] (it has no reshape hook), so it runs on CNNs only
    captum = LayerGradCam(model, layer) if transform is None else None

    def ours() -> object:
        cams, _ = grad_cam(target, x, classes, layer_name, layout=choice.grid_layout)
        return cams

    def ours_upsampled() -> object:
        cams, _ = grad_cam(target, x, classes, layer_name, layout=choice.grid_layout)
        return upsample(cams, (args.size, args.size))

    def captum_upsampled() -> object:
        attr = captum.attribute(x, target=classes, relu_attributions=True)
        return F.interpolate(attr, size=(args.size, args.size), mode="bilinear", align_corners=False)

    def pytorch_grad_cam() -> object:
        # Built per call: a live GradCAM keeps its hooks on the layer, which would slow down
        # every other method's forward pass too.
        with GradCAM(model=model, target_layers=[layer], reshape_transform=transform) as pgc:
            out = pgc(input_tensor=x, targets=pgc_targets)  # includes its own resize to the input
        model.zero_grad(set_to_none=True)  # it leaves parameter gradients behind; drop them
        return out

    methods: dict[str, Callable[[], object]] = {
        "floor (forward + backward to the layer)": lambda: floor(model, layer, x, classes),
        "auditkit grad_cam (layer resolution)": ours,
        "auditkit grad_cam + upsample": ours_upsampled,
    }
    if captum is not None:
        methods["captum LayerGradCam (layer resolution)"] = lambda: captum.attribute(x, target=classes, relu_attributions=True)
        methods["captum LayerGradCam + upsample"] = captum_upsampled
    methods["pytorch-grad-cam GradCAM (+ its resize)"] = pytorch_grad_cam

    def timed(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for fn in methods.values():
            timed(fn)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            times[name].append(timed(fn))

    peak: dict[str, float] = {}
    if device.type == "cuda":
        for name, fn in methods.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            torch.cuda.synchronize(device)
            peak[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**20

    floor_median = statistics.median(times["floor (forward + backward to the layer)"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.arch} {choice.describe()}")
    print(f"{args.size}x{args.size}, batch {args.batch}, {where}, torch {torch.__version__}, "
          f"median of {args.repeats} interleaved runs")
    header = f"{'method':<42} {'median ms':>10} {'min ms':>8} {'x floor':>8}"
    if peak:
        header += f" {'peak MiB':>9}"
    print(header)
    for name, samples in times.items():
        med = statistics.median(samples)
        line = f"{name:<42} {1000 * med:>10.1f} {1000 * min(samples):>8.1f} {med / floor_median:>8.3f}"
        if peak:
            line += f" {peak[name]:>9.0f}"
        print(line)
    ours_med = statistics.median(times["auditkit grad_cam (layer resolution)"])
    pgc_med = statistics.median(times["pytorch-grad-cam GradCAM (+ its resize)"])
    print(f"auditkit / floor = {ours_med / floor_median:.3f} (goal <= 1.1); "
          f"pytorch-grad-cam / auditkit = {pgc_med / ours_med:.2f} (goal > 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
