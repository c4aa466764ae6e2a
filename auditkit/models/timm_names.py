"""Model format ``timm:NAME[.TAG][?pretrained=true]``: a timm classifier (optional dependency),
random, or with timm's pretrained weights from the Hugging Face cache, never downloaded offline."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch

from auditkit import weights as pretrained
from auditkit.errors import UsageError
from auditkit.models.format import (
    ModelOptions,
    SpecOption,
    first_line,
    make_target,
    model_format,
    split_options,
)
from auditkit.models.state_dict import load_state_dict, read_state_dict
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, Target

PREFIX = "timm:"
OPTIONS = {
    "pretrained": SpecOption(str, "true loads timm's pretrained weights; a .TAG after the name picks which", choices=("true", "false")),
}
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
# What timm's loader asks the Hugging Face hub for, in its order (safetensors first).
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
HF_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")


def owns(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load(spec: str, options: ModelOptions) -> Target:
    base, params = split_options(spec, OPTIONS, separator="?")
    name = base[len(PREFIX):].strip().lower()
    try:
        import timm
    except ImportError as exc:
        cause = "" if getattr(exc, "name", None) == "timm" else f" (importing it failed: {first_line(exc)})"
        raise UsageError(f"model {spec!r} needs timm{cause}: pip install 'auditkit[timm]'") from exc
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    architectures = timm.list_models()
    if arch not in architectures:
        close = difflib.get_close_matches(arch, architectures, n=5, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise UsageError(f"model {spec!r}: timm has no model named {arch!r}; {hint}")
    if tag:
        tags = timm.list_pretrained(f"{arch}.*")
        if name not in tags:
            listed = f"one of {', '.join(tags)}" if tags else "no tag (timm has no pretrained weights for it)"
            raise UsageError(f"model {spec!r}: timm has no pretrained tag {tag!r} for {arch}; expected {listed}")
    want_pretrained = params.get("pretrained") == "true"
    if tag and not want_pretrained:
        raise UsageError(
            f"model {spec!r}: the tag .{tag} names pretrained weights; add ?pretrained=true to load them, or drop "
            f".{tag} for random weights"
        )
    if want_pretrained and options.weights:
        raise UsageError(
            f"model {spec!r}: give weights either as ?pretrained=true or as --weights {options.weights}, not both"
        )

    kwargs: dict[str, Any] = {}
    state: dict[str, torch.Tensor] | None = None
    if want_pretrained:
        cfg = get_pretrained_cfg(name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            raise UsageError(f"model {spec!r}: timm has no pretrained weights for {arch}; drop ?pretrained=true")
        name = f"{arch}.{cfg.tag}" if cfg.tag else arch
        classes = cfg.num_classes or 0
        if not classes:
            raise UsageError(
                f"model {spec!r}: timm's {name} weights have no classifier head (features only); pick a tag "
                "trained for classification, or give a fine-tuned state_dict with --weights"
            )
        # Fewer classes in the data is fine: its labels are indices into the weights' classes
        # (ImageNet-index folders); more cannot be.
        if options.num_classes is not None and options.num_classes > classes:
            raise UsageError(
                f"model {spec!r}: pretrained timm {name} has {classes} classes but the data has "
                f"{options.num_classes}; drop ?pretrained=true to build a random {options.num_classes}-class model, "
                f"or give a fine-tuned {options.num_classes}-class state_dict with --weights"
            )
        state, source = _pretrained_state(spec, name, cfg.hf_hub_id, cfg.url, options)
        # timm's own loader on the state read here: its checkpoint filters and head handling
        kwargs.update(pretrained=True, num_classes=classes, pretrained_cfg_overlay={"state_dict": state})
    elif options.num_classes is not None:
        kwargs["num_classes"] = options.num_classes

    try:
        model = _build(timm, spec, name if want_pretrained else arch, **kwargs)
    except UsageError:
        if state is not None:
            # timm's strict load says a checkpoint that does not fit in many lines; this says it in one
            fresh = _build(timm, spec, name, num_classes=kwargs["num_classes"])
            load_state_dict(fresh, state, f"pretrained weights {source}", f"model {spec!r}")
        raise
    if state is not None:
        model.pretrained_cfg.pop("state_dict", None)  # the model would otherwise hold a second copy
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    classes = getattr(model, "num_classes", None)
    if state is not None:
        description = f"timm {name}, pretrained, {classes} classes (from {source})"
    elif options.weights:
        user_state = _read_weights(options.weights, f"--weights {options.weights}")
        load_state_dict(model, user_state, f"--weights {options.weights}", f"model {spec!r}")
        description = f"timm {arch}, {classes} classes, weights from {options.weights}"
    else:
        description = f"timm {arch}, random init, {classes} classes"

    input_size = _fixed_input_size(model, cfg)
    target = make_target(
        model,
        spec,
        options,
        mean=tuple(cfg.get("mean") or IMAGENET_MEAN),
        std=tuple(cfg.get("std") or IMAGENET_STD),
        input_size=input_size,
        description=description,
    )
    if state is not None:
        from auditkit.data.preprocess import Preprocess

        # timm's evaluation transform for these weights: resize to size / crop_pct, center crop.
        target.expected_preprocess = Preprocess.coerce(cfg)
    return target


def _build(timm: Any, spec: str, name: str, **kwargs: Any) -> torch.nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except Exception as exc:  # a builder rejecting an argument, or a checkpoint that does not fit
        raise UsageError(f"model {spec!r}: timm could not build it: {first_line(exc)}") from exc


def _fixed_input_size(model: torch.nn.Module, cfg: dict[str, Any]) -> tuple[int, ...] | None:
    """The one input size a model takes (a ViT's, from its config), or None when it takes any."""
    if not cfg.get("fixed_input_size") or not cfg.get("input_size"):
        return None
    # Some configs say fixed for architectures built to take any size (timm's test_vit).
    patch_embed = getattr(model, "patch_embed", None)
    if getattr(model, "dynamic_img_size", False) or not getattr(patch_embed, "strict_img_size", True):
        return None
    return tuple(cfg["input_size"])


# -- pretrained weights: the Hugging Face cache the way timm fills it, or the torch hub cache -------


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment at call time, by huggingface_hub's rule:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_cache_file(repo_id: str, filename: str, revision: str | None = None, cache: Path | None = None) -> Path:
    """Where the hub cache keeps ``filename`` of the model repository ``repo_id`` at
    ``revision`` (default main): ``models--OWNER--NAME/snapshots/COMMIT/filename``, with the
    commit that ``refs/REVISION`` names, or the revision itself when no ref is recorded."""
    repo_dir = (cache or hf_hub_cache()) / f"models--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    ref = repo_dir / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    return repo_dir / "snapshots" / commit / filename


def _pretrained_state(
    spec: str, name: str, hf_hub_id: str | None, url: str | None, options: ModelOptions
) -> tuple[dict[str, torch.Tensor], Path]:
    # huggingface_hub's own switch counts too: with it set, its download would only fail later
    offline = pretrained.offline_requested(options.offline) or os.environ.get(HF_OFFLINE_ENV, "").strip().lower() in _TRUE
    why = f"offline (--offline, offline = true, {pretrained.OFFLINE_ENV}=1 or {HF_OFFLINE_ENV}=1)"
    instead = "or give its state_dict with --weights FILE instead of ?pretrained=true"
    if hf_hub_id:
        repo_id, _, revision = hf_hub_id.partition("@")
        cache = hf_hub_cache()
        for filename in HF_WEIGHTS_FILES:
            found = hf_cache_file(repo_id, filename, revision or None, cache)
            if found.is_file():
                return _read_weights(str(found), f"model {spec!r}: pretrained weights {str(found)!r}"), found
        path = hf_cache_file(repo_id, HF_WEIGHTS_FILES[0], revision or None, cache)
        if offline:
            origin = f"{HF_ENDPOINT}/{repo_id}/resolve/{revision or 'main'}/{path.name}"
            raise pretrained.OfflineError(
                f"model {spec!r}: {why} and timm's {name} weights are not in the Hugging Face cache: put {path} in "
                f"place (from {origin}), {instead}",
                path,
            )
        found = _download_from_hf(spec, name, repo_id, revision or None, cache, path, instead)
        return _read_weights(str(found), f"model {spec!r}: pretrained weights {str(found)!r}"), found

    path = pretrained.hub_checkpoint_dir() / os.path.basename(url or "")
    if not path.is_file():
        if offline:
            raise pretrained.OfflineError(
                f"model {spec!r}: {why} and timm's {name} weights are not in the torch hub cache: put {path} in place "
                f"(from {url}), {instead}",
                path,
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=True)
        except Exception as exc:
            raise UsageError(
                f"model {spec!r}: could not download timm's {name} from {url} to {path} ({type(exc).__name__}: "
                f"{first_line(exc)}); put the file there, {instead}"
            ) from exc
    return _read_weights(str(path), f"model {spec!r}: pretrained weights {str(path)!r}"), path


def _download_from_hf(
    spec: str, name: str, repo_id: str, revision: str | None, cache: Path, path: Path, instead: str
) -> Path:
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError

    for filename in HF_WEIGHTS_FILES:
        try:
            return Path(
                huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache))
            )
        except EntryNotFoundError:
            continue  # the repository has the other file
        except Exception as exc:
            raise UsageError(
                f"model {spec!r}: could not download timm's {name} from {HF_ENDPOINT}/{repo_id} into {cache} "
                f"({type(exc).__name__}: {first_line(exc)}); put {path} in place, {instead}"
            ) from exc
    raise UsageError(
        f"model {spec!r}: {HF_ENDPOINT}/{repo_id} holds none of {', '.join(HF_WEIGHTS_FILES)}; {instead.removeprefix('or ')}"
    )


def _read_weights(path: str, what: str) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file, or from a torch.save file through the one
    state-dict reader."""
    if not path.endswith(".safetensors"):
        return read_state_dict(path, what)
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{what}: no such file; expected a .safetensors state_dict")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{what}: not a readable safetensors file ({first_line(exc)}); was the download cut short?") from exc


auditkit_load_model = model_format(owns, load)
