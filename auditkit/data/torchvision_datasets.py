"""Data format ``torchvision:NAME[?root=DIR&size=..|crop=..&resize=..]``: a torchvision dataset
already on disk (never downloaded), its train split for training and its test split audited."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditkit.data.base import AuditData
from auditkit.data.datasets import DatasetSplit
from auditkit.data.spec import data_format, parse_query, preprocess_param, reject_unknown, split_query
from auditkit.data.synthetic import MIN_CLASSES
from auditkit.errors import UsageError

PREFIX = "torchvision:"
DEFAULT_TORCHVISION_ROOT = "data"


def owns(spec: str) -> bool:
    return spec.startswith(PREFIX)


def load(spec: str, *, seed: int, size: int | None) -> AuditData:
    import torchvision.datasets

    head, query = split_query(spec)
    name = head.removeprefix(PREFIX)
    params = parse_query(spec, query)
    reject_unknown(spec, params, ("root", "size", "resize", "crop"))
    preprocess = preprocess_param(spec, params, size)
    root = Path(params.get("root", DEFAULT_TORCHVISION_ROOT)).expanduser()

    available = {n.lower(): n for n in dir(torchvision.datasets) if isinstance(getattr(torchvision.datasets, n), type)}
    if name.lower() not in available:
        raise UsageError(
            f"unknown torchvision dataset {name!r} in data spec {spec!r}; expected a class in torchvision.datasets "
            "such as CIFAR10, CIFAR100, MNIST, FashionMNIST, SVHN"
        )
    cls = getattr(torchvision.datasets, available[name.lower()])
    parameters = inspect.signature(cls).parameters
    if "train" in parameters:
        split_args = ({"train": True}, {"train": False})
    elif "split" in parameters:
        split_args = ({"split": "train"}, {"split": "test"})
    else:
        raise UsageError(
            f"torchvision dataset {cls.__name__} has no train/test switch (neither 'train' nor 'split'); "
            "expected a dataset like CIFAR10 or SVHN, or wrap it in a file.py:factory"
        )
    kwargs: dict[str, Any] = {"download": False} if "download" in parameters else {}
    try:
        train_set = cls(str(root), **split_args[0], **kwargs)
        eval_set = cls(str(root), **split_args[1], **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"torchvision dataset {cls.__name__} rejected the train/test split arguments ({exc}); "
            "expected a dataset like CIFAR10 or SVHN, or wrap it in a file.py:factory"
        ) from exc
    except (RuntimeError, OSError) as exc:
        raise UsageError(
            f"torchvision dataset {cls.__name__} was not found under {str(root.resolve())!r} "
            "and downloads are disabled; "
            f"expected its files there already (pass ?root=DIR to look elsewhere) [{exc}]"
        ) from exc
    if len(eval_set) == 0:
        raise UsageError(f"data {spec!r} has no evaluation images; expected a non-empty test split")

    class_names = list(getattr(eval_set, "classes", []) or [])
    if not class_names:
        targets = getattr(eval_set, "targets", None)
        if targets is None:
            targets = getattr(eval_set, "labels", None)
        num_classes = int(torch.as_tensor(np.asarray(targets)).max()) + 1 if targets is not None else 0
        class_names = [str(k) for k in range(num_classes)]
    if len(class_names) < MIN_CLASSES:
        raise UsageError(
            f"torchvision dataset {cls.__name__} under {str(root)!r} has {len(class_names)} class(es) "
            f"{class_names}; at least two classes are needed"
        )
    return AuditData(
        name=f"torchvision:{cls.__name__}",
        spec=spec,
        eval=DatasetSplit(eval_set),
        train=DatasetSplit(train_set) if len(train_set) else None,
        num_classes=len(class_names),
        class_names=class_names,
        description=f"torchvision {cls.__name__} from {root}",
        preprocess=preprocess,
    )


auditkit_load_data = data_format(owns, load)
