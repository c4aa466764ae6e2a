"""Models with known Grad-CAM behaviour for the gradcam tests: a hand-set colour detector, an
explanation that ignores the weights, a hand-built model that looks at the object, and a small
net trained in about a second on synthetic shapes whose corner marker gives the class away."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from auditkit import AuditData, TensorSplit

# Colours the hand-set detector knows; each detector channel fires on exactly one of them.
RED, GREEN, BLUE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
GRAY = 0.5


class ColourEvidenceNet(nn.Module):
    """Class k's evidence is pixels of colour k: ``evidence`` = ReLU(1x1 conv) with channel k =
    x_k - (sum of the other two channels) - 0.5, which is 0.5 on a pure colour-k pixel and
    negative on gray, white, black and the other pure colours; logits = GAP of the evidence
    (an identity linear head). Grad-CAM at ``evidence`` for class k is therefore exactly the
    colour-k mask times 0.5 / (H*W)."""

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            conv.weight.copy_((2 * torch.eye(3) - torch.ones(3, 3)).view(3, 3, 1, 1))
            conv.bias.fill_(-0.5)
        self.evidence = nn.Sequential(conv, nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.evidence(x))))


def two_squares(n: int = 8, size: int = 32, side: int = 8, seed: int = 0, box_on: str = "label") -> AuditData:
    """Gray images with one red and one blue square each, at two random places of a grid with
    ``side // 2`` pixels between squares (more than the pointing tolerance at 32 px).
    Labels alternate red (0) and blue (2). ``box_on="label"`` puts the box (and mask) on the
    labelled colour's square; ``"other"`` on the other square, so a detector of the labelled
    colour points outside the box."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), GRAY)
    labels = torch.tensor([0, 2] * (n // 2) + [0] * (n % 2))
    boxes = torch.zeros(n, 4)
    step = side + side // 2
    places = [(x, y) for y in range(0, size - side + 1, step) for x in range(0, size - side + 1, step)]
    for i in range(n):
        pick = torch.randperm(len(places), generator=g)[:2]
        (rx, ry), (bx, by) = places[int(pick[0])], places[int(pick[1])]
        images[i, :, ry : ry + side, rx : rx + side] = torch.tensor(RED).view(3, 1, 1)
        images[i, :, by : by + side, bx : bx + side] = torch.tensor(BLUE).view(3, 1, 1)
        red_is_labelled = int(labels[i]) == 0
        on_red = red_is_labelled if box_on == "label" else not red_is_labelled
        x0, y0 = (rx, ry) if on_red else (bx, by)
        boxes[i] = torch.tensor([x0, y0, x0 + side, y0 + side], dtype=torch.float32)
    cols = torch.arange(size)
    masks = (
        (cols[None, None, :] >= boxes[:, 0, None, None]) & (cols[None, None, :] < boxes[:, 2, None, None])
        & (cols[None, :, None] >= boxes[:, 1, None, None]) & (cols[None, :, None] < boxes[:, 3, None, None])
    )
    return AuditData(
        "two-squares", TensorSplit(images, labels, boxes, masks), num_classes=3,
        class_names=["red", "green", "blue"], has_boxes=True, has_masks=True,
    )


class Brightness(nn.Module):
    """Parameter-free: the mean of the three channels, average-pooled 2x2 ([B,1,H/2,W/2])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.mean(dim=1, keepdim=True), 2)


class WeightBlindNet(nn.Module):
    """An explanation that ignores the weights: one feature channel (the image's brightness,
    computed without parameters), a bias-free linear head, and squared logits,
    y_c = (w_c * mean(A))^2. Grad-CAM's channel weight is 2 w_c^2 mean(A) / (h*w) > 0 for any
    w, so the map is the brightness map itself whatever the head's weights are."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.brightness = Brightness()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.brightness(x)).flatten(1)) ** 2


class Foreground(nn.Module):
    """Parameter-free: how far each pixel's colour is from the background, [B,1,H,W] in [0,1].
    The background of a plain-background image is the median colour of its outermost pixels
    (the corner marker sits one pixel in, so it is never among them); a pixel counts fully as
    foreground from 0.3 away (synthetic shapes keep objects at least 0.45 from the background)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)
        background = border.median(dim=2).values[:, :, None, None]
        distance = (x - background).norm(dim=1, keepdim=True)
        return ((distance - 0.15) / 0.15).clamp(0, 1)


class ObjectnessNet(nn.Module):
    """A model built to look at the object, with no training: ``foreground`` marks pixels that
    differ from the plain background, ``evidence`` averages it over a window of about a fifth of
    the image (7 px at 32), and every class's logit is the maximum of that evidence (a Linear
    head with all-ones weights). The densest foreground is the object's interior: a shape
    covers its window, the 3x3 corner marker at most 9 of 49 pixels of it. Grad-CAM at
    ``evidence`` is the evidence map itself, for every class."""

    def __init__(self, num_classes: int = 4, size: int = 32) -> None:
        super().__init__()
        window = 2 * round(0.1 * size) + 1
        self.foreground = Foreground()
        self.evidence = nn.AvgPool2d(window, stride=1, padding=window // 2)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(1, num_classes)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.evidence(self.foreground(x))).flatten(1))


class EvidenceNet(nn.Module):
    """A small fully convolutional classifier: three conv+BN+ReLU blocks (one with stride 2), a
    1x1 ``evidence`` map per class squashed to (0,1), and logits = 10 x the global maximum of
    each class's evidence. Grad-CAM at ``evidence`` is the explained class's evidence map."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.evidence = nn.Sequential(nn.Conv2d(2 * width, num_classes, 1), nn.Sigmoid())
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * self.pool(self.evidence(self.features(x))).flatten(1)


def train_shortcut_model(data: AuditData, steps: int = 50, seed: int = 0) -> EvidenceNet:
    """Train an :class:`EvidenceNet` on the class labels of ``data``'s train split. With the
    corner marker on every image, the marker (one saturated colour per class) is the easiest
    cue, and it is what the net learns."""
    torch.manual_seed(seed)
    model = EvidenceNet(data.num_classes)
    images, labels = data.train.images, data.train.labels
    _fit(model, steps, seed, lambda idx: F.cross_entropy(model(images[idx]), labels[idx]), len(images))
    return model.eval()


def _fit(model: nn.Module, steps: int, seed: int, loss_of, n: int, batch: int = 32) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss = loss_of(torch.randint(0, n, (batch,), generator=g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad = None


def pgc_normalize(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's scale_cam_image on [B,h,w]: x - min, then / (1e-7 + max). Its epsilon
    matters for random-weight models, whose maps can be 1e-5 small, so comparisons use it on
    both sides."""
    flat = maps.flatten(1)
    flat = flat - flat.amin(dim=1, keepdim=True)
    return (flat / (1e-7 + flat.amax(dim=1, keepdim=True))).view_as(maps)


def pgc_pipeline(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Raw Grad-CAM maps [B,h,w] as pytorch-grad-cam returns them: normalized at the layer's
    resolution, resized bilinearly to the input, normalized again."""
    from auditkit.saliency import upsample

    size = (size, size) if isinstance(size, int) else size
    return pgc_normalize(upsample(pgc_normalize(maps), size))
