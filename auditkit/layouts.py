"""Where the image grid is in a layer's output: channels first (CNNs), channels last (Swin,
ConvNeXt's inner layers) or a sequence of tokens (ViT, DeiT, Hugging Face ViT), read from the
probe's record of calls, so that Grad-CAM and the checks built on it work on transformer
blocks as on convolutions (the ``reshape_transform`` of pytorch-grad-cam, found instead of
written by the user)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from torch import nn

# At most this many tokens may precede the patch tokens: a class token, a distillation token
# (DeiT) and up to 8 register tokens (Darcet et al. 2024 use 4; some models 8 or 16).
MAX_PREFIX_TOKENS = 17

LayoutKind = Literal["nchw", "nhwc", "tokens"]


@dataclass(frozen=True)
class ActivationLayout:
    """How a layer's output ``[B, ...]`` holds an ``h x w`` grid of image positions.

    :ivar kind: ``"nchw"`` (``[B,C,h,w]``, convolutions), ``"nhwc"`` (``[B,h,w,C]``, Swin's
        stages, ConvNeXt's inner layers) or ``"tokens"`` (``[B,N,C]`` with
        ``N = prefix_tokens + h*w``, patch tokens in row-major order after the prefix).
    :ivar grid: ``(h, w)``.
    :ivar prefix_tokens: tokens before the patch tokens (class, distillation, register
        tokens); dropped by :meth:`to_nchw`, as pytorch-grad-cam's documented ViT
        ``reshape_transform`` drops the class token. 0 for the other kinds.
    """

    kind: LayoutKind
    grid: tuple[int, int]
    prefix_tokens: int = 0

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The output ``t`` of a layer with this layout as a ``[B,C,h,w]`` view or copy.

        :raises ValueError: ``t``'s shape does not fit the layout (images of another size than
            the probe's).
        """
        h, w = self.grid
        if self.kind == "nchw":
            # any grid: a CNN explains images of any size the same way
            if t.ndim != 4:
                raise ValueError(f"expected [B,C,h,w] activations, got {list(t.shape)}")
            return t
        if self.kind == "nhwc":
            if t.ndim != 4 or tuple(t.shape[1:3]) != (h, w):
                raise ValueError(f"expected [B,{h},{w},C] activations, got {list(t.shape)}")
            return t.permute(0, 3, 1, 2)
        n = self.prefix_tokens + h * w
        if t.ndim != 3 or t.shape[1] != n:
            raise ValueError(f"expected [B,{n},C] tokens ({self.prefix_tokens} + {h}x{w}), got {list(t.shape)}")
        return t[:, self.prefix_tokens:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    def describe(self) -> str:
        """``tokens 1+14x14``, ``channels last 7x7``, ``channels first 7x7``: for messages."""
        h, w = self.grid
        if self.kind == "tokens":
            return f"tokens {self.prefix_tokens}+{h}x{w}" if self.prefix_tokens else f"tokens {h}x{w}"
        return f"channels {'first' if self.kind == 'nchw' else 'last'} {h}x{w}"

    def to_details(self) -> dict[str, Any]:
        return {"kind": self.kind, "grid": list(self.grid), "prefix_tokens": self.prefix_tokens}


def infer_layouts(
    calls: Sequence[tuple[str, nn.Module, tuple[int, ...]]], image_size: tuple[int, int], batch: int
) -> list[tuple[ActivationLayout | None, str | None]]:
    """The layout of each output in a forward pass's record, or why it holds no image grid.

    ``calls`` are ``(module name, module, output shape)`` in call order (forward hooks: a
    container after its children). The rules, in order, reading the record front to back:

    * an output whose first dimension is not the batch (Swin's windows folded into it) has
      no grid;
    * ``[B,a,b,c]`` is channels last when a module that works on the last dimension produced
      it (``nn.Linear``; ``nn.LayerNorm`` over the last dimension, not a ``LayerNorm2d``),
      when it has the shape of such an output seen before (the block around them), or when
      ``b x c`` cannot be the image's grid at any stride while ``a x b`` can (a permute in
      ``forward``); else it is channels first, as in every CNN. Once the stream has been
      channels last or tokens, a 4-d output with an axis as long as the token count
      (attention weights ``[B,heads,N,N]``, per-head queries ``[B,heads,N,d]``) holds
      tokens, not a grid;
    * ``[B,N,C]`` is tokens when ``N - h*w`` is between 0 and :data:`MAX_PREFIX_TOKENS` for
      the last grid seen (a patch embedding's ``[B,C,h,w]``, a Swin stage's ``[B,h,w,C]``):
      the leading ``N - h*w`` tokens are class or register tokens. Any width C counts (a
      block's ``qkv`` ``[B,N,3C]`` and MLP hidden layer are on the grid too; the layer choice
      passes over them for the block's norm). Once the stream is tokens, a sequence of
      ``(h/f)*(w/f)`` tokens (f = 2, 4, 8) is the stream after patch merging (Hugging Face's
      Swin keeps tokens ``[B,N,C]`` through its stages): a coarser grid, with its own width.

    A grid of one position (``h*w == 1``) is recorded but is no grid to explain.

    :param calls: the probe's record, call order.
    :param image_size: ``(H, W)`` of the probe's images (a grid must fit it).
    :param batch: the probe's batch size.
    :returns: one ``(layout, None)`` or ``(None, reason)`` per call.
    """
    channels_last_shapes: set[tuple[int, ...]] = set()
    token_counts: set[int] = set()
    stream: tuple[int, int, int] | None = None  # the last grid: h, w, channels
    transformer = False
    answers: list[tuple[ActivationLayout | None, str | None]] = []
    for name, module, shape in calls:
        answer: tuple[ActivationLayout | None, str | None]
        if len(shape) not in (3, 4):
            answer = (None, f"output {list(shape[1:])} is not a grid")
        elif shape[0] != batch:
            answer = (None, f"its first dimension {shape[0]} is not the batch of {batch} (windows or heads folded into it)")
        elif len(shape) == 4:
            _, a, b, c = shape
            channels_last = _works_on_last_dim(module, c) or tuple(shape) in channels_last_shapes
            # a permute in forward (timm's dynamic-size patch embedding hands back [B,h,w,C]
            # through an Identity): read as channels first the "grid" could not be the image's
            channels_last = channels_last or (not _fits_image(b, c, image_size) and _fits_image(a, b, image_size))
            if channels_last:
                channels_last_shapes.add(tuple(shape))
                transformer = True
                stream = (a, b, c)
                token_counts.add(a * b)
                answer = (ActivationLayout("nhwc", (a, b)), None)
            elif transformer and (b in token_counts or c in token_counts):
                answer = (None, f"output {list(shape[1:])} runs over tokens (attention heads), not over the image grid")
            else:
                stream = (b, c, a)
                answer = (ActivationLayout("nchw", (b, c)), None)
        else:
            _, n, c = shape
            if stream is None:
                answer = (None, f"output {list(shape[1:])} is a sequence with no image grid before it")
            else:
                h, w, _ = stream
                prefix = n - h * w
                merged = _merged_grid(h, w, n) if transformer else None
                if merged is not None:
                    # patch merging (Hugging Face's Swin): the tokens of a coarser grid, a new stream
                    stream = (*merged, c)
                    token_counts.add(n)
                    answer = (ActivationLayout("tokens", merged, 0), None)
                elif not 0 <= prefix <= MAX_PREFIX_TOKENS:
                    answer = (None, f"its {n} tokens do not fit the {h}x{w} grid before it")
                else:
                    transformer = True
                    token_counts.add(n)
                    answer = (ActivationLayout("tokens", (h, w), prefix), None)
        answers.append(answer)
    return answers


def _fits_image(h: int, w: int, image_size: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid can be the image's ``H x W`` seen at some stride: no finer
    than the image, and about the same stride along both axes (within 2x, for rounding)."""
    height, width = image_size
    if h < 1 or w < 1 or h > height or w > width:
        return False
    stride_h, stride_w = height / h, width / w
    return max(stride_h, stride_w) / min(stride_h, stride_w) <= 2


def _merged_grid(h: int, w: int, n: int) -> tuple[int, int] | None:
    """The grid ``(h/f, w/f)`` of ``n`` tokens, for f = 2, 4 or 8, when a stage merges
    f x f patches of the ``h x w`` token grid (Swin's patch merging), else None."""
    for f in (2, 4, 8):
        if h % f == 0 and w % f == 0 and (h // f) * (w // f) == n:
            return (h // f, w // f)
    return None


def _works_on_last_dim(module: nn.Module, last: int) -> bool:
    if isinstance(module, nn.Linear):
        return module.out_features == last
    if isinstance(module, nn.LayerNorm) and not type(module).__name__.endswith("2d"):
        return tuple(module.normalized_shape) == (last,)
    return False
