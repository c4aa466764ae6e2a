"""Pretrained torchvision weights the ecosystem's way: named by torchvision's weights enums,
kept in the torch hub cache ($TORCH_HOME/hub/checkpoints) and downloaded there on first use,
exactly as ``torchvision.models.resnet18(weights=...)`` does; never downloaded when offline
(``--offline``, ``offline = true``, ``AUDITKIT_OFFLINE=1``). Shared by the model loaders and
the baselines."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import torch

from auditkit.errors import UsageError

OFFLINE_ENV = "AUDITKIT_OFFLINE"
_TRUE = ("1", "true", "yes", "on")


class OfflineError(UsageError):
    """Pretrained weights are needed, not on disk, and the network is forbidden. ``path``
    is the file to put in place."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def offline_requested(flag: bool | None = None) -> bool:
    """Whether network access is forbidden: ``flag`` (``--offline`` or the config's
    ``offline = true``) when True, else the environment variable ``AUDITKIT_OFFLINE``
    (``1``, ``true``, ``yes`` or ``on``)."""
    return bool(flag) or os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def resolve(weights: Any) -> Any:
    """A torchvision weights enum member from itself or its name, e.g.
    ``"ResNet18_Weights.IMAGENET1K_V1"``.

    Raises:
        UsageError: no such enum or member in torchvision.models.
    """
    if not isinstance(weights, str):
        return weights
    import torchvision

    enum_name, _, member = weights.partition(".")
    enum = getattr(torchvision.models, enum_name, None)
    if enum is None or member not in getattr(enum, "__members__", {}):
        raise UsageError(f"pretrained weights {weights!r}: not a torchvision weights enum member such as ResNet18_Weights.IMAGENET1K_V1")
    return enum[member]


def checkpoint_name(weights: Any) -> str:
    """The file name torchvision gives ``weights`` in the hub cache: the last part of its URL."""
    return os.path.basename(urllib.parse.urlparse(resolve(weights).url).path)


def hub_checkpoint_dir() -> Path:
    """The torch hub cache of checkpoints: ``$TORCH_HOME/hub/checkpoints`` (by default
    ``~/.cache/torch/hub/checkpoints``), where torchvision downloads to and looks first."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | None = None) -> list[Path]:
    """Where pretrained checkpoints are looked for, in order: ``weights_dir``
    (``--weights-dir``), then :func:`hub_checkpoint_dir`.

    Raises:
        UsageError: ``weights_dir`` is given but is not a directory.
    """
    dirs = [Path(weights_dir).expanduser()] if weights_dir else []
    if dirs and not dirs[0].is_dir():
        raise UsageError(f"--weights-dir {weights_dir!r} is not a directory; expected a folder of torchvision checkpoints")
    return dirs + [hub_checkpoint_dir()]


def find_checkpoint(weights: Any, weights_dir: str | None = None) -> Path | None:
    """The local file of ``weights`` in :func:`search_dirs`, or None; nothing is downloaded."""
    name = checkpoint_name(weights)
    for directory in search_dirs(weights_dir):
        if (directory / name).is_file():
            return directory / name
    return None


def load_state_dict(
    weights: Any,
    *,
    weights_dir: str | None = None,
    offline: bool | None = None,
    progress: bool = False,
    what: str = "pretrained weights",
) -> tuple[dict[str, torch.Tensor], Path]:
    """The state_dict of torchvision ``weights`` (an enum member or its name) and the file it
    came from: the local copy in :func:`search_dirs` when there is one, else downloaded into
    the torch hub cache through torchvision's own mechanism (``weights.get_state_dict``,
    which calls ``torch.hub.load_state_dict_from_url`` with the hash check), unless offline.
    Loaded with ``weights_only=True`` onto the CPU.

    Args:
        weights: e.g. ``torchvision.models.ResNet18_Weights.IMAGENET1K_V1`` or its name.
        weights_dir: a folder searched before the hub cache (``--weights-dir``).
        offline: forbid the network (see :func:`offline_requested`, which also reads
            ``AUDITKIT_OFFLINE``).
        progress: show torch hub's download progress bar.
        what: who needs the weights, to start error messages (e.g. "baseline resnet18").

    Raises:
        OfflineError: offline and no local copy; the one-line message names the full path
            of the file to put in place and the URL to get it from.
        UsageError: the download failed, or the file is not a readable state_dict.
    """
    weights = resolve(weights)
    found = find_checkpoint(weights, weights_dir)
    if found is not None:
        return _read(weights, found, what), found
    path = hub_checkpoint_dir() / checkpoint_name(weights)
    if offline_requested(offline):
        raise OfflineError(
            f"{what}: offline (--offline, offline = true or {OFFLINE_ENV}=1) and torchvision's {_name(weights)} is "
            f"not on disk: put {path} in place (from {weights.url}) or give --weights-dir with that file",
            path,
        )
    try:
        state = weights.get_state_dict(progress=progress, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(
            f"{what}: could not download torchvision's {_name(weights)} from {weights.url} to {path} "
            f"({type(exc).__name__}: {exc}); put the file there, or train from scratch"
        ) from exc
    return state, path


def _read(weights: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        # the hub loader itself, pointed at the folder that holds the file: it reads the
        # current and the legacy zip formats alike, and never downloads a file that exists
        return torch.hub.load_state_dict_from_url(
            weights.url, model_dir=str(path.parent), map_location="cpu", file_name=path.name, weights_only=True
        )
    except Exception as exc:
        # The state_dict reader of --weights says in one line what the file is instead
        # (imported here: the model loaders import this module).
        from auditkit.models.state_dict import read_state_dict

        read_state_dict(str(path), f"{what}: pretrained weights {str(path)!r}")
        raise UsageError(
            f"{what}: torch hub cannot read pretrained weights {str(path)!r} ({type(exc).__name__}); expected "
            f"torchvision's file from {weights.url}"
        ) from exc


def _name(weights: Any) -> str:
    return f"{type(weights).__name__}.{weights.name}"
