"""Model format ``torchvision:NAME[?weights=ENUM_NAME|DEFAULT]``: a torchvision classifier,
random or with pretrained weights from the torch hub cache (:mod:`auditkit.weights`)."""
from __future__ import annotations

import difflib
import re
from typing import Any

import torch

from auditkit import weights as pretrained
from auditkit.errors import UsageError
from auditkit.models.format import ModelOptions, SpecOption, first_line, make_target, model_format, split_options
from auditkit.models.state_dict import load_state_dict, read_state_dict, strip_wrapper_prefixes
from auditkit.target import IMAGENET_MEAN, IMAGENET_STD, Target

PREFIX = "torchvision:"
OPTIONS = {"weights": SpecOption(str, "a member of the model's weights enum, or DEFAULT")}


def owns(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load(spec: str, options: ModelOptions) -> Target:
    import torchvision

    base, params = split_options(spec, OPTIONS, separator="?")
    name = base[len(PREFIX):].strip().lower()
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        if name in torchvision.models.list_models():
            raise UsageError(
                f"model {spec!r}: torchvision's {name} is not an image classifier; expected one of "
                "torchvision.models.list_models(module=torchvision.models)"
            )
        close = difflib.get_close_matches(name, classifiers, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(classifiers[:5])}"
        raise UsageError(f"model {spec!r}: torchvision has no classifier named {name!r}; {hint}")

    weights = _torchvision_weights(spec, name, params["weights"]) if "weights" in params else None
    if weights is not None and options.weights:
        raise UsageError(
            f"model {spec!r}: give pretrained weights either as ?weights= or as --weights {options.weights}, "
            "not both"
        )
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    kwargs: dict[str, Any] = {"num_classes": options.num_classes or 1000}
    if weights is not None:
        categories = len(weights.meta.get("categories") or ()) or 1000
        # Fewer classes in the data is fine: its labels are indices into the weights' classes
        # (ImageNet-index folders); more cannot be.
        if options.num_classes is not None and options.num_classes > categories:
            raise UsageError(
                f"model {spec!r}: pretrained {weights} has {categories} classes but the data has "
                f"{options.num_classes}; drop ?weights= to build a random {options.num_classes}-class model, "
                f"or use a factory spec with --weights for a fine-tuned head"
            )
        kwargs["num_classes"] = categories
        transforms = weights.transforms()
        mean = tuple(getattr(transforms, "mean", mean))
        std = tuple(getattr(transforms, "std", std))
        min_size = weights.meta.get("min_size")
        # The builders set these from the weights' metadata when they load weights themselves.
        if name.startswith("vit_") and min_size:
            kwargs["image_size"] = min_size[0]
        if name.startswith("maxvit") and min_size:
            kwargs["input_size"] = tuple(min_size)
    user_state = read_state_dict(options.weights) if options.weights else None
    aux_heads = name in ("googlenet", "inception_v3") and (
        weights is not None
        or any(k.startswith(("aux1.", "AuxLogits.")) for k in strip_wrapper_prefixes(user_state or {}))
    )
    if name in ("googlenet", "inception_v3"):
        # Built with auxiliary heads only to load a checkpoint that holds them; dropped after.
        # init_weights: torchvision's truncated-normal init for random models (the library
        # default init gives near-constant logits); skipped when a checkpoint overwrites it.
        kwargs.update(aux_logits=aux_heads, init_weights=weights is None and user_state is None)
        if weights is not None:
            kwargs["transform_input"] = True  # torchvision's checkpoints expect its input transform

    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as exc:  # a builder rejecting an argument: the user's num_classes, usually
        raise UsageError(f"model {spec!r}: torchvision could not build it: {first_line(exc)}") from exc

    if weights is not None:
        state, path = pretrained.load_state_dict(
            weights, weights_dir=options.weights_dir, offline=options.offline, progress=True, what=f"model {spec!r}"
        )
        if name.startswith("densenet"):
            state = _rename_legacy_densenet_keys(state)
        load_state_dict(model, state, f"pretrained checkpoint {path}", f"model {spec!r}")
        description = f"torchvision {name}, pretrained {weights} (from {path})"
    elif user_state is not None:
        load_state_dict(model, user_state, f"--weights {options.weights}", f"model {spec!r}")
        description = f"torchvision {name}, {kwargs['num_classes']} classes, weights from {options.weights}"
    else:
        description = f"torchvision {name}, random init, {kwargs['num_classes']} classes"
    if aux_heads and name == "googlenet":
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    elif aux_heads and name == "inception_v3":
        model.aux_logits, model.AuxLogits = False, None

    input_size = None
    image_size = getattr(model, "image_size", None)  # vision transformers take one size only
    if isinstance(image_size, int):
        input_size = (3, image_size, image_size)
    elif name.startswith("maxvit"):
        input_size = (3, *kwargs.get("input_size", (224, 224)))
    target = make_target(model, spec, options, mean=mean, std=std, input_size=input_size, description=description)
    if weights is not None:
        from auditkit.data.preprocess import Preprocess

        # The evaluation transform the weights were measured with (e.g. resize 232, crop 224
        # for ResNet50_Weights.IMAGENET1K_V2): real photographs of other sizes get exactly it.
        target.expected_preprocess = Preprocess.coerce(weights.transforms())
    return target


def _torchvision_weights(spec: str, name: str, value: str) -> Any:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except Exception as exc:
        raise UsageError(f"model {spec!r}: torchvision has no pretrained weights for {name}") from exc
    members = [w.name for w in enum]
    prefix, dot, member = value.strip().rpartition(".")
    if dot and prefix != enum.__name__:
        raise UsageError(f"model {spec!r}: weights {value!r} are not {name}'s; expected DEFAULT or one of {members}")
    if member == "DEFAULT":
        return enum.DEFAULT
    if member not in members:
        raise UsageError(f"model {spec!r}: {enum.__name__} has no {member!r}; expected DEFAULT or one of {members}")
    return enum[member]


def _rename_legacy_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torchvision's DenseNet checkpoints still use 'norm.1'-style keys from before module names
    # could not contain dots; its builder renames them the same way.
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
        r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed



auditkit_load_model = model_format(owns, load)
