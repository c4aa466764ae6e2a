"""Models and data with known answers for the white-box tests: bright-quadrant images, a small
CNN, gradient-masked wrappers of it, a linear problem with exact minimal perturbations, one whose
gradients underflow, and a wrapper that counts gradient passes and clean-point gradients."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import torch
from torch import nn

from auditkit import AuditData, TensorSplit, hookimpl


def quadrant_images(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy grey images whose class (0-3) is the quadrant that is 0.3 brighter: a task a small
    CNN learns in a few dozen steps and that needs a large perturbation (~30/255) to flip."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = 0.3 + 0.2 * torch.rand(n, 3, size, size, generator=g)
    half = size // 2
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        images[i, :, r * half : (r + 1) * half, c * half : (c + 1) * half] += 0.3
    return images.clamp(0, 1), labels


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head with dropout (so its training flag matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(64, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ScaledLogits(nn.Module):
    """Logits multiplied by a large factor: softmax saturates, so the cross-entropy gradient is
    exactly zero on confidently classified images (gradient masking by saturation)."""

    def __init__(self, model: nn.Module, factor: float = 1e4):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


class QuantizedInput(nn.Module):
    """Input quantized to a few grey levels before the model: round() has a zero gradient, so
    every input gradient is zero while clean accuracy is unchanged (shattered gradients)."""

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


class SoftmaxOutput(nn.Module):
    """A model that returns probabilities instead of logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


class NoisyLogits(nn.Module):
    """A randomized model: fresh Gaussian noise on the logits at every call."""

    def __init__(self, model: nn.Module, scale: float = 0.5):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + self.scale * torch.randn_like(logits)


class LinearProblem:
    """A binary linear classifier on 3x4x4 images with its exact minimal perturbations.

    For logits W x + b, the smallest perturbation that moves x from class y to class t has
    Linf size margin / ||w_y - w_t||_1 and L2 size margin / ||w_y - w_t||_2, where margin is
    the logit difference (Hoelder duality). Images sit near mid-grey, so the [0,1] box never
    binds at these sizes; labels are the model's own predictions, so every image is correct.
    """

    def __init__(self, n: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
        with torch.no_grad():
            self.model[1].weight.copy_(torch.randn(2, 48, generator=g))
            # logits W (x - 0.5): mid-grey sits on the boundary, so both classes occur
            self.model[1].bias.copy_(-0.5 * self.model[1].weight.sum(1))
        self.images = (0.5 + 0.1 * torch.randn(n, 3, 4, 4, generator=g)).clamp(0.3, 0.7)
        with torch.no_grad():
            logits = self.model(self.images)
        self.labels = logits.argmax(1)
        w = self.model[1].weight.detach()
        diff = w[0] - w[1]
        margin = (logits[:, 0] - logits[:, 1]).abs()
        self.min_linf = (margin / diff.abs().sum()).tolist()
        self.min_l2 = (margin / diff.norm()).tolist()
        largest_l2_pixel_change = max(self.min_l2) * float(diff.abs().max() / diff.norm())
        assert max(self.min_linf) < 0.25 and largest_l2_pixel_change < 0.25, "the [0,1] box would bind"
        self.data = AuditData("linear", TensorSplit(self.images, self.labels), num_classes=2)


def tiny_gradient_problem(n: int = 32) -> tuple[nn.Module, AuditData]:
    """A linear model so sure of every image that its input gradient lives in float32's
    subnormal range: the summed cross-entropy's gradient is about 1e-44 per pixel, and the
    batch mean's (1/32 of it) rounds to exactly zero. Every image is classified correctly.
    Not gradient masking: the gradient exists; only the mean's scale underflows."""
    g = torch.Generator().manual_seed(0)
    images = (0.5 + 0.01 * torch.randn(n, 3, 4, 4, generator=g)).clamp(0, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    with torch.no_grad():
        sign = torch.ones(48)
        sign[1::2] = -1  # class 1's logit stays near 0 on near-grey images
        model[1].weight.copy_(torch.stack([torch.zeros(48), sign]))
        model[1].bias.copy_(torch.tensor([101.0, 0.0]))  # softmax(1) ~ e^-101 ~ 1e-44
    labels = torch.zeros(n, dtype=torch.long)
    return model, AuditData("confident", TensorSplit(images, labels), num_classes=2)


class GradientPasses(nn.Module):
    """A model wrapper that counts, per check, the images that go through a backward pass,
    and which of them were clean points: images of the shared clean pass, each with the loss
    target read off the gradient reaching the logits (untargeted cross-entropy towards class y
    gives a gradient negative at y only and positive elsewhere; a targeted one towards t is
    positive at t only). Register it as a plugin too: its ``auditkit_run_check`` wrapper says
    which check runs, and records the clean pass's images before the first one.
    Needs at least three classes for the loss target to be read unambiguously."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.check: str | None = None
        self.clean: set[bytes] = set()
        self.backward: Counter[str] = Counter()  # images through a backward pass, per check
        self.clean_points: dict[str, Counter] = defaultdict(Counter)  # check -> (image, loss target) -> count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        rows = [bytes(r.detach().cpu().numpy().tobytes()) for r in x]
        check = self.check
        if check is None:
            self.clean.update(rows)
        elif out.requires_grad:
            out.register_hook(lambda grad: self._count(check, rows, grad))
        return out

    def _count(self, check: str, rows: list[bytes], grad: torch.Tensor) -> None:
        self.backward[check] += len(rows)
        for row, g in zip(rows, grad):
            if row in self.clean:
                if int((g < 0).sum()) == 1:
                    goal = ("untargeted", int(g.argmin()))
                elif int((g > 0).sum()) == 1:
                    goal = ("targeted", int(g.argmax()))
                else:
                    goal = ("zero", -1)
                self.clean_points[check][(row, goal)] += 1

    @hookimpl(wrapper=True)
    def auditkit_run_check(self, check: Any, ctx: Any) -> Any:
        self.check = None
        _ = ctx.clean  # the shared clean pass: its images are the clean points
        self.check = check.id
        try:
            return (yield)
        finally:
            self.check = None
