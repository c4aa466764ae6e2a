"""auditkit.similarity.ssim against SSIM written out by hand from Wang et al. 2004 (NumPy,
separable Gaussian window, "valid" positions only) on a real photograph at its own
resolution, against scikit-image's method written with SciPy, and its small-image policy."""
from __future__ import annotations

import importlib.util
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from auditkit.similarity import SSIM_MIN_WINDOW, SsimWindow, ssim, ssim_window

C1, C2 = 0.01**2, 0.03**2


def hand_ssim(x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """Mean SSIM of two [C,H,W] arrays, straight from the paper: a normalized Gaussian window
    (separable, so one 1-D pass per axis), population statistics, only the positions where the
    window lies inside the image, then the mean over positions and channels. No padding, no
    library filter."""
    offsets = np.arange(window) - (window - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    g /= g.sum()

    def blur(t: np.ndarray) -> np.ndarray:
        rows = np.lib.stride_tricks.sliding_window_view(t, window, axis=1) @ g  # [H, W-k+1]
        return np.lib.stride_tricks.sliding_window_view(rows, window, axis=0) @ g  # [H-k+1, W-k+1]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    means = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        ma, mb = blur(a), blur(b)
        va, vb, cab = blur(a * a) - ma * ma, blur(b * b) - mb * mb, blur(a * b) - ma * mb
        means.append((((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))).mean())
    return float(np.mean(means))


def scipy_ssim(x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """scikit-image's structural_similarity(gaussian_weights=True, use_sample_covariance=False,
    data_range=1) for [C,H,W], written with SciPy's filter: filter the whole image, crop the
    window's radius."""
    radius = (window - 1) // 2
    truncate = radius / sigma  # scipy's radius is int(truncate * sigma + 0.5)
    values = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64)):
        def filt(img: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(img, sigma=sigma, truncate=truncate)

        ua, ub = filt(a), filt(b)
        va, vb, vab = filt(a * a) - ua * ua, filt(b * b) - ub * ub, filt(a * b) - ua * ub
        s = ((2 * ua * ub + C1) * (2 * vab + C2)) / ((ua**2 + ub**2 + C1) * (va + vb + C2))
        values.append(s[radius:-radius, radius:-radius].mean())
    return float(np.mean(values))


def photo_pair(name: str, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A real photograph from the foolbox wheel at its own resolution, and the same photograph
    JPEG-compressed at quality 10 (in memory), both [1,C,H,W] float64 in [0,1]."""
    spec = importlib.util.find_spec("foolbox")  # the files, without importing foolbox
    if spec is None or spec.origin is None:
        pytest.skip("foolbox is not installed (its wheel ships the sample photographs)")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"this foolbox has no sample photograph {name}")
    photo = Image.open(path).convert(mode)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=10)
    compressed = Image.open(io.BytesIO(buffer.getvalue())).convert(mode)

    def tensor(im: Image.Image) -> torch.Tensor:
        array = np.asarray(im, dtype=np.float64) / 255.0
        return torch.from_numpy(array if array.ndim == 3 else array[..., None]).permute(2, 0, 1)[None]

    return tensor(photo), tensor(compressed)


@pytest.fixture(scope="module")
def pairs():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 24, 24, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1)
    noisy = (smooth + 0.1 * torch.randn(smooth.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return [(clean, smooth), (smooth, noisy), (clean, noisy), (clean, 1 - clean)]


# --- known answers ---------------------------------------------------------------------------


def test_a_photograph_at_native_resolution_matches_ssim_written_by_hand():
    # 512x512, its luminance as one [1,H,W] map: float64 convolution is slow on the CPU, and
    # the 1024x683 colour photograph below takes about 10 s on 2 cores.
    photo, compressed = photo_pair("imagenet_00_243.jpg", "L")
    assert photo.shape == (1, 1, 512, 512)
    ours = ssim(photo[:, 0], compressed[:, 0]).item()
    assert ours == pytest.approx(hand_ssim(photo[0].numpy(), compressed[0].numpy()), abs=1e-10)
    assert 0.3 < ours < 0.9  # quality 10 leaves the photograph recognizable, its texture not


@pytest.mark.slow
def test_a_colour_photograph_at_native_resolution_matches_ssim_written_by_hand():
    photo, compressed = photo_pair("imagenet_10_541.jpg", "RGB")
    assert photo.shape == (1, 3, 683, 1024)
    ours = ssim(photo, compressed).item()
    assert ours == pytest.approx(hand_ssim(photo[0].numpy(), compressed[0].numpy()), abs=1e-10)
    assert 0.3 < ours < 0.9


def test_matches_scikit_images_method_written_with_scipy(pairs):
    for x, y in pairs:
        ours = ssim(x, y).tolist()
        assert ours == pytest.approx([scipy_ssim(a.numpy(), b.numpy()) for a, b in zip(x, y)], abs=1e-10)
        assert ours == pytest.approx([hand_ssim(a.numpy(), b.numpy()) for a, b in zip(x, y)], abs=1e-10)


def test_maps_match_the_reference_one_map_at_a_time():
    # [B,H,W] maps, as the Grad-CAM randomization check passes them; one map is inverted.
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 32, 40, generator=g, dtype=torch.float64)
    b = (0.6 * a + 0.4 * torch.rand(3, 32, 40, generator=g, dtype=torch.float64)).clamp(0, 1)
    b[2] = 1 - a[2]
    ours = ssim(a, b)
    assert ours.shape == (3,)
    assert ours.tolist() == pytest.approx([hand_ssim(a[i : i + 1].numpy(), b[i : i + 1].numpy()) for i in range(3)], abs=1e-10)
    assert float(ours[2]) < 0 < float(ours[0])


def test_an_image_with_itself_is_one(pairs):
    x = pairs[0][0]
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    # float32 too: the statistics are taken in float64, so a flat map's variance is exactly 0
    flat = torch.zeros(2, 32, 32)
    flat[:, 8:12, 8:12] = 1.0
    assert ssim(flat, flat).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("a,b", [(0.2, 0.2), (0.2, 0.6), (0.0, 1.0), (0.9, 0.5)])
def test_constant_images_give_the_luminance_term(a, b):
    # sigma_x = sigma_y = sigma_xy = 0: SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    x = torch.full((1, 3, 16, 16), a, dtype=torch.float64)
    y = torch.full((1, 3, 16, 16), b, dtype=torch.float64)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), abs=1e-12)


def test_data_range_sets_the_constants():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 20, 20, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert ssim(255 * x, 255 * y, data_range=255.0).tolist() == pytest.approx(ssim(x, y).tolist(), abs=1e-12)
    ours = ssim(x, y, data_range=2.0).tolist()
    assert ours == pytest.approx([hand_ssim(a.numpy(), b.numpy(), data_range=2.0) for a, b in zip(x, y)], abs=1e-10)


def test_symmetric_and_falls_with_noise(pairs):
    x, y = pairs[1]
    assert ssim(x, y).tolist() == pytest.approx(ssim(y, x).tolist(), abs=1e-12)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    scores = [ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 > scores[-1]


# --- images smaller than the window ----------------------------------------------------------


@pytest.mark.parametrize(
    "height,width,size",
    [(683, 1024, 11), (11, 11, 11), (10, 10, 9), (9, 40, 9), (40, 8, 7), (7, 7, 7), (6, 6, 5), (5, 12, 5)],
)
def test_the_window_is_the_largest_odd_one_that_fits_with_sigma_scaled(height, width, size):
    assert ssim_window(height, width) == SsimWindow(size, 1.5 * size / 11)
    g = torch.Generator().manual_seed(4)
    h, w = min(height, 48), min(width, 48)  # the window depends on the smaller side only
    x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    window = ssim_window(h, w)
    theirs = [hand_ssim(a.numpy(), b.numpy(), window=window.size, sigma=window.sigma) for a, b in zip(x, y)]
    assert ssim(x, y).tolist() == pytest.approx(theirs, abs=1e-10)
    if window.size < 11:  # and the paper's 11 px window would be something else
        assert ssim_window(48, 48).size == 11


def test_fitted_windows_match_scikit_images_method_too():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    theirs = [scipy_ssim(a.numpy(), b.numpy(), window=7, sigma=1.5 * 7 / 11) for a, b in zip(x, y)]
    assert ssim(x, y).tolist() == pytest.approx(theirs, abs=1e-10)
    # 8x8 maps, NaN under the old Grad-CAM SSIM (no 11 px window fits), get the 7 px window
    assert ssim(x[:, 0], y[:, 0]).tolist() == pytest.approx([hand_ssim(a[:1].numpy(), b[:1].numpy(), 7, 1.5 * 7 / 11) for a, b in zip(x, y)], abs=1e-10)


@pytest.mark.parametrize("height,width", [(4, 4), (3, 30), (30, 4), (1, 1), (2, 64)])
def test_below_five_pixels_there_is_no_value(height, width):
    assert SSIM_MIN_WINDOW == 5
    assert ssim_window(height, width) is None
    x = torch.rand(3, 2, height, width)
    out = ssim(x, x)
    assert out.shape == (3,) and out.dtype == x.dtype and all(math.isnan(v) for v in out.tolist())


# --- batches, dtypes, devices ----------------------------------------------------------------


def test_a_batch_gives_what_each_image_gives_alone():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, 29, 37, generator=g, dtype=torch.float64)
    y = (x + torch.linspace(0.0, 0.5, 6, dtype=torch.float64).view(6, 1, 1, 1) * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    batched = ssim(x, y)
    alone = torch.cat([ssim(x[i : i + 1], y[i : i + 1]) for i in range(6)])
    assert batched.tolist() == pytest.approx(alone.tolist(), abs=1e-14)
    assert batched.tolist() == sorted(batched.tolist(), reverse=True)  # more noise, less similar
    assert ssim(x[:0], y[:0]).shape == (0,)


@pytest.mark.parametrize("shape", [(16, 64, 64), (5, 3, 40, 33)])
def test_cpu_chunks_give_the_one_call_values_bit_for_bit(shape, monkeypatch):
    import auditkit.similarity as similarity

    g = torch.Generator().manual_seed(3)
    x = torch.rand(shape, generator=g)
    y = (x + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    chunked = ssim(x, y)  # 64x64 maps go one at a time: 5 x 121 x 4096 doubles is about 20 MB
    monkeypatch.setattr(similarity, "_CPU_UNFOLD_BYTES", 1 << 62)  # the whole batch in one call
    assert torch.equal(chunked, ssim(x, y))
    monkeypatch.setattr(similarity, "_CPU_UNFOLD_BYTES", 1)  # one image a call
    assert torch.equal(chunked, ssim(x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_the_result_keeps_the_inputs_dtype(dtype, pairs):
    x, y = pairs[1]
    out = ssim(x.to(dtype), y.to(dtype))
    assert out.dtype == dtype and out.shape == (3,)
    tolerance = {torch.float32: 1e-6, torch.float64: 0.0, torch.bfloat16: 1e-2}[dtype]
    # the statistics are float64 whatever comes in: only the inputs' and the result's rounding differ
    assert out.double().tolist() == pytest.approx(ssim(x.to(dtype).double(), y.to(dtype).double()).tolist(), abs=tolerance)
    assert ssim(x.float(), y.float()).tolist() == pytest.approx(ssim(x, y).tolist(), abs=1e-5)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_the_result_stays_on_the_inputs_device(device, pairs):
    x, y = pairs[2]
    out = ssim(x.float().to(device), y.float().to(device))
    assert out.device.type == device and out.dtype == torch.float32
    assert out.cpu().tolist() == pytest.approx(ssim(x, y).tolist(), abs=1e-5)
    small = ssim(x[..., :4, :4].to(device), y[..., :4, :4].to(device))
    assert small.device.type == device and torch.isnan(small).all()


# --- errors ----------------------------------------------------------------------------------


def test_rejects_mismatched_or_unsupported_inputs():
    with pytest.raises(ValueError, match=r"same shape|one shape.*\[1, 3, 8, 8\] and \[1, 3, 8, 9\]"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\[N,C,H,W\] or \[N,H,W\].*\[8, 8\]"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(TypeError, match="floating-point.*torch.uint8"):
        ssim(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="data_range must be a positive number"):
            ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16), data_range=bad)


def test_a_missing_torchmetrics_is_named(monkeypatch):
    for name in ("torchmetrics", "torchmetrics.functional", "torchmetrics.functional.image"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"needs torchmetrics: pip install 'torchmetrics>=1.4'"):
        ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16))


def test_the_cli_and_the_plugins_import_without_torchmetrics():
    # torchmetrics is imported on the first SSIM, not when auditkit or its checks load.
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "import auditkit.cli, auditkit.similarity, auditkit_gradcam, auditkit_inversion\n"
        "from auditkit_gradcam import randomization\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
