"""Turn a data SPEC (``--data``) into AuditData through the built-in formats
(:data:`auditkit.data.DATA_FORMATS`), and say why when none of them owns the spec."""
from __future__ import annotations

import importlib
from pathlib import Path

from auditkit.data import DATA_FORMATS
from auditkit.data.base import AuditData
from auditkit.data.datasets import DatasetSplit
from auditkit.data.image_files import IMAGE_EXTENSIONS, ImageFileSplit, pil_to_tensor
from auditkit.data.spec import ACCEPTED_FORMS, is_url, load_if_owned, located_path, looks_like_path
from auditkit.errors import UsageError

__all__ = [
    "ACCEPTED_FORMS",
    "IMAGE_EXTENSIONS",
    "DatasetSplit",
    "ImageFileSplit",
    "load_data",
    "pil_to_tensor",
    "unknown_spec_error",
]


def load_data(spec: str, *, seed: int = 0, size: int | None = None) -> AuditData:
    """Load the data named by ``spec``.

    Accepted forms:

    - ``synthetic:shapes[?n=..&train=..&size=..&classes=..&seed=..&spurious=..&spurious_classes=..&background=..]``:
      the built-in dataset (:func:`auditkit.data.synthetic.make_shapes`); ``seed`` defaults
      to the ``seed`` argument and ``size`` to the ``size`` argument, else 64.
    - ``DIR[?size=..|crop=..&resize=..][&eval_fraction=..|train_fraction=..]``: an ImageFolder
      directory, either ``DIR/train/<class>/*`` with ``DIR/val/<class>/*`` (or ``valid/``,
      ``validation/``, ``test/``), or ``DIR/<class>/*`` (or only one of ``train/``, ``val/``):
      without both train and val folders every image is evaluated and there is no train
      split. ``train_fraction=F`` (or ``eval_fraction=1-F``) holds out the share F, chosen by
      a hash of each file's relative path, as the train split. Images load lazily, as RGB in
      [0,1], at their native size (see "Image size" below).
    - ``FILE.json[?size=..|crop=..&resize=..&root=..&eval_fraction=..|train_fraction=..]``: a
      COCO-style file. Each annotated image is one sample labelled with the category of its
      largest annotation; its boxes are every annotation of that category (the objects the
      label names; the pointing game hits any of them) and its mask, when every kept
      annotation has polygon segmentation, is the union of their polygons. Images are found
      under ``root`` (default: the JSON's folder). A per-image ``split`` field
      (``"train"``/``"val"``) decides the split; images without one are evaluated, or split
      by ``train_fraction`` (a hash of the image id) when no image has one. Boxes are checked
      against their file's size first: one with zero or negative width/height, or wholly
      outside its image, is dropped (one warning counts them by reason), one partly outside is
      clipped, and an image left without a box is left out.
    - ``torchvision:NAME[?root=..&size=..|crop=..&resize=..]``: a torchvision dataset already
      on disk (never downloaded), ``train=True``/``split="train"`` as the train split and the
      test split for evaluation; default root ``./data``.
    - ``path/to/file.py:factory`` or ``package.module:factory``: ``factory()`` (given ``seed``
      and ``size`` when it accepts them by those names) returns an AuditData, or a
      ``(train_dataset, eval_dataset, num_classes)`` tuple whose datasets yield ``(image, label)``
      pairs or dicts as described in :class:`auditkit.data.base.Split`; ``train_dataset`` may
      be None.

    Image size (files and datasets): ``size=N`` resizes every image to N x N (the ``size``
    argument is its default); ``crop=N[&resize=M]`` resizes the shorter side to M (default
    N * 256/224, rounded) and keeps the central N x N, torchvision's ImageNet evaluation
    transform at M=256, N=224. Otherwise, once the model is known (:meth:`AuditData.fit_to`):
    the model's own evaluation transform when it declares one (pretrained torchvision
    weights); else the native size when the evaluation images share one the model takes;
    else the model's fixed input size, resized and center-cropped; else 256 -> 224.
    ``data.preprocessing`` says what was done, and the terminal says it when auditkit chose.

    Pixels: every route yields float images in [0,1]; uint8 images are divided by 255, and
    values outside [0,1] (already normalized, or 0-255 floats) are a UsageError, never clamped.

    Classes: every route refuses data with fewer than two classes (``num_classes``, or for
    an ImageFolder or COCO file the labels of the evaluation images): with one class any model
    that answers it scores 1.0 on every check.

    Image files (ImageFolder and COCO) are each decoded once when loaded: files that do not
    decode (truncated, not an image, corrupt) are left out with one warning that counts them
    and names the first few; a file with more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` is
    a UsageError ("image too large").

    Args:
        spec: the data SPEC.
        seed: the default seed for generated data.
        size: the default square side for data that is resized; ``?size=`` or ``?crop=`` in
            the spec wins. None: native sizes.

    Returns:
        The loaded AuditData.

    Raises:
        UsageError: the spec is malformed, a path is missing, a parameter is unknown or has a
            bad value, the data cannot be read (no evaluation image decodes), an image is too
            large, images lie outside [0,1], the evaluation split is empty, or the data has
            fewer than two classes.
    """
    for name in DATA_FORMATS:
        module = importlib.import_module(name)
        data = load_if_owned(spec, module.owns, module.load, seed=seed, size=size)
        if data is not None:
            return data
    raise unknown_spec_error(spec)


def unknown_spec_error(spec: str) -> UsageError:
    """Why no format owns ``spec``: empty, a URL, a file that is not COCO JSON, a path that
    does not exist, or no form at all."""
    spec = spec.strip()
    if not spec:
        return UsageError(f"empty data spec; expected one of: {ACCEPTED_FORMS}")
    if is_url(spec):
        return UsageError(f"unknown data spec {spec!r}: URLs are not data sources; expected one of: {ACCEPTED_FORMS}")
    path, _ = located_path(spec) or (Path(spec), "")
    if path.is_file():
        return UsageError(f"data file {str(path)!r} is not a COCO-style .json file; expected one of: {ACCEPTED_FORMS}")
    path_text = spec.partition("?")[0]
    if looks_like_path(path_text):
        return UsageError(
            f"data path {path_text!r} does not exist; expected an ImageFolder directory or a COCO .json file"
        )
    return UsageError(f"unknown data spec {spec!r} (and no such path); expected one of: {ACCEPTED_FORMS}")
