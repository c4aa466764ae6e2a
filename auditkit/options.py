"""Every setting of an audit, declared once: its name in code, its command-line flags, its
key in ``[tool.auditkit]`` and in the report's ``config``, its type, default and help.

:class:`auditkit.config.Config`'s fields, the config-file validation, the ``auditkit run``
parser, the command line over the config file, the Python API's keyword arguments and the
command line rebuilt for a report all read :data:`OPTIONS`.
"""
from __future__ import annotations

import argparse
import copy
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from auditkit.errors import UsageError

DEFAULT_BASELINES = ("alexnet", "googlenet", "resnet18")
DEFAULT_REPORT_DIR = Path("reports")

#: Marks an option the command line did not give (argparse's default for every option).
_NOT_GIVEN = None


def parse_baselines(value: str | list[str] | None) -> list[str]:
    """``"alexnet,resnet18"``, a list, or ``"none"`` -> the baseline names."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    items = [v for v in items if v]
    return [] if items in ([], ["none"]) else items


def parse_id_list(value: str) -> list[str]:
    """``"accuracy.*, gradcam.localization"`` -> the ids and patterns, blanks dropped."""
    return [c.strip() for c in value.split(",") if c.strip()]


def parse_name_paths(items: list[str]) -> dict[str, str]:
    """Repeated ``NAME=PATH`` -> ``{NAME: PATH}``."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--baseline-weights {item!r}: expected NAME=PATH, e.g. resnet18=resnet18.pt")
        out[name] = path
    return out


@dataclass(frozen=True)
class Option:
    """One setting of an audit.

    :ivar name: the attribute of :class:`~auditkit.config.Config` and the Python API's
        keyword argument.
    :ivar type: the value's type: ``str``, ``int``, ``float``, ``bool``, ``list`` or ``dict``.
    :ivar default: the value when nothing sets it (copied per config, so a list stays private).
    :ivar help: the ``--help`` line.
    :ivar flags: the command-line flags (empty: the option is not on the command line).
    :ivar file_key: its key in ``[tool.auditkit]`` and in the report's ``config`` (None: it is
        neither in the config file nor in the report).
    :ivar file_types: the types the config file may give (default: from ``type``).
    :ivar action: argparse's: ``store``, ``store_true``, ``store_false``, ``append``.
    :ivar metavar, choices: argparse's.
    :ivar parse: turns the command line's value (a string, or the list of an ``append``) into
        the option's value.
    :ivar extend: the command line adds to the config file's value instead of replacing it.
    :ivar command_default: what ``auditkit run`` uses when neither the command line nor the
        config file gives a value, where that differs from ``default`` (the Python API's).
    :ivar minimum: the smallest value the command line accepts.
    :ivar pinned: always written in a rebuilt command line (the settings the numbers depend on).
    :ivar python_api: a keyword argument of :func:`auditkit.audit`.
    """

    name: str
    type: type
    default: Any = None
    help: str | None = None
    flags: tuple[str, ...] = ()
    file_key: str | None = None
    file_types: tuple[type, ...] = ()
    action: str = "store"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[Any], Any] | None = None
    extend: bool = False
    command_default: Any = None
    minimum: int | None = None
    pinned: bool = False
    python_api: bool = True

    @property
    def flag(self) -> str:
        """The flag that names this option in messages (the long one when there is one)."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0] if self.flags else self.name)

    @property
    def accepted_file_types(self) -> tuple[type, ...]:
        if self.file_types:
            return self.file_types
        return (int, float) if self.type is float else (self.type,)

    def initial(self) -> Any:
        """A fresh default value."""
        return copy.copy(self.default)

    def add_to(self, parser: argparse.ArgumentParser | Any) -> None:
        """Declare this option on an argparse parser (or argument group)."""
        kwargs: dict[str, Any] = {"dest": self.name, "help": self.help}
        if self.action == "store":
            kwargs.update(default=_NOT_GIVEN, metavar=self.metavar, choices=self.choices)
            if self.type in (int, float) and self.parse is None:
                kwargs["type"] = self.type
        elif self.action in ("store_true", "store_false"):
            kwargs.update(action=self.action, default=_NOT_GIVEN)
        elif self.action == "append":
            kwargs.update(action="append", default=[], metavar=self.metavar)
        else:  # pragma: no cover - a mistake in the table
            raise ValueError(f"option {self.name}: unknown action {self.action!r}")
        parser.add_argument(*self.flags, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})

    def given(self, args: argparse.Namespace) -> bool:
        value = getattr(args, self.name, _NOT_GIVEN)
        return value is not _NOT_GIVEN and value != []

    def from_command_line(self, args: argparse.Namespace) -> Any:
        value = getattr(args, self.name)
        return self.parse(value) if self.parse is not None else value

    def command_args(self, value: Any) -> list[str]:
        """The command-line arguments that give ``value`` (empty when it cannot or need not)."""
        if not self.flags or value is None:
            return []
        flag = self.flag
        if self.action == "store_true":
            return [flag] if value else []
        if self.action == "store_false":
            return [flag] if value is False else []
        if self.action == "append":
            items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else list(value)
            return [a for item in items for a in (flag, str(item))]
        if self.type is list:
            if not value:  # "none" only where the command line would otherwise fill it in
                return [flag, "none"] if self.command_default else []
            return [flag, ",".join(map(str, value))]
        return [flag, str(value)]


# Order: the order of Config's fields and of the report's config section.
OPTIONS: tuple[Option, ...] = (
    Option("model", str, flags=("--model",), file_key="model", python_api=False,
           help="torchvision:NAME, timm:NAME, file.py:factory, module:factory, a .pt2, TorchScript or ONNX file, or an http(s) endpoint"),
    Option("weights", str, flags=("--weights",), file_key="weights",
           help="state_dict for the model (loaded with weights_only=True)"),
    Option("weights_dir", str, flags=("--weights-dir",), file_key="weights_dir", metavar="DIR",
           help="a folder of pretrained torchvision checkpoints, searched before the torch hub cache "
           "(for ?weights= models and the baselines)"),
    Option("data", str, "synthetic:shapes", flags=("--data",), file_key="data", python_api=False,
           help="synthetic:shapes[?n=..&size=..], an ImageFolder dir, a COCO JSON, file.py:factory"),
    Option("selected_checks", list, flags=("--checks",), file_key="select", parse=parse_id_list, python_api=False,
           help="comma-separated check ids or family.* patterns"),
    Option("keyword", str, flags=("-k",), file_key="keyword", metavar="EXPR",
           help="select checks whose id matches EXPR (and/or/not)"),
    Option("baselines", list, [], flags=("--baselines",), file_key="baselines", file_types=(list, str),
           parse=parse_baselines, command_default=list(DEFAULT_BASELINES),
           help="comma-separated classic baselines to audit beside the model "
           "(default alexnet,googlenet,resnet18; resnet50 available) or none"),
    Option("baseline_weights", dict, {}, flags=("--baseline-weights",), file_key="baseline_weights",
           action="append", metavar="NAME=PATH", parse=parse_name_paths, extend=True,
           help="a state_dict checkpoint for a baseline instead of training it (repeatable)"),
    # The baselines' training budget, in optimizer steps (None: the default budget,
    # auditkit.baselines.training.DEFAULT_STEPS), or in passes over the train split's size;
    # baseline_seconds is only a safety cap on wall time per baseline.
    Option("baseline_steps", int, flags=("--baseline-steps",), file_key="baseline_steps", metavar="N",
           help="training budget per baseline in optimizer steps (default 1500); the same budget gives "
           "the same baseline on any machine"),
    Option("baseline_epochs", int, flags=("--baseline-epochs",), file_key="baseline_epochs", metavar="N",
           help="the budget as N passes over the train split's size instead of --baseline-steps"),
    Option("baseline_seconds", float, 600.0, flags=("--baseline-seconds",), file_key="baseline_seconds", metavar="S",
           help="safety cap on each baseline's training time (default 600); when it binds, the report "
           "says so and the result depends on the machine's speed"),
    Option("baseline_init", str, "auto", flags=("--baseline-init",), file_key="baseline_init",
           choices=("auto", "scratch", "pretrained"),
           help="how trained baselines start: from scratch, or fine-tuned from torchvision's ImageNet "
           "weights (default auto: scratch on generated data, pretrained on any other)"),
    Option("offline", bool, False, flags=("--offline",), file_key="offline", action="store_true",
           help="never download (pretrained weights must be in --weights-dir or the torch hub cache); "
           "also AUDITKIT_OFFLINE=1 or offline = true"),
    Option("device", str, "auto", flags=("--device",), file_key="device", pinned=True,
           help="auto (CUDA when present), cpu or cuda[:N]"),
    Option("seed", int, 0, flags=("--seed",), file_key="seed", pinned=True),
    Option("max_images", int, flags=("--max-images",), file_key="max_images", minimum=1,
           help="audit at most N evaluation images"),
    Option("batch_size", int, 64, flags=("--batch-size",), file_key="batch_size", minimum=1),
    Option("threads", int, flags=("--threads",), file_key="threads", minimum=1, metavar="N",
           help="CPU threads for PyTorch (default: torch's, one per physical core); the command "
           "also makes OpenMP wait passively unless OMP_WAIT_POLICY is set"),
    Option("json", str, flags=("--json",), file_key="json", command_default=str(DEFAULT_REPORT_DIR / "report.json"),
           help=f"write the JSON report here (default {DEFAULT_REPORT_DIR}/report.json)"),
    Option("junitxml", str, flags=("--junitxml",), file_key="junitxml", help="write JUnit XML here"),
    Option("html", str, flags=("--html",), file_key="html", help="write the HTML scorecard here"),
    Option("md", str, flags=("--md",), file_key="md",
           help="write a short Markdown summary here (for a pull-request comment)"),
    Option("compare", str, flags=("--compare",), file_key="compare", metavar="PREVIOUS.json",
           help="fail when a headline metric regressed against this earlier report"),
    Option("compare_abs_tolerance", float, 0.02, file_key="compare_abs_tolerance"),
    Option("compare_rel_tolerance", float, 0.05, file_key="compare_rel_tolerance"),
    Option("plugins", list, [], flags=("-p",), file_key="plugins", action="append", metavar="PLUGIN", extend=True,
           python_api=False, help="load a plugin module, or disable one with no:NAME (repeatable)"),
    Option("trust_pickle", bool, False, flags=("--trust-pickle",), file_key="trust_pickle", action="store_true",
           help="allow loading a fully pickled model (runs code from the file)"),
    Option("mean", list, file_key="mean"),
    Option("std", list, file_key="std"),
    # -q/-v on the command line (counted, so not declared through ``flags``).
    Option("verbosity", int, 0, python_api=False),
    Option("progress", bool, flags=("--no-progress",), action="store_false", python_api=False,
           help="hide progress bars"),
    Option("check_settings", dict, {}, file_key="checks", python_api=False),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
BY_FILE_KEY: dict[str, Option] = {o.file_key: o for o in OPTIONS if o.file_key}


def command_line_options() -> Iterator[Option]:
    """The options of ``auditkit run``, in ``--help`` order."""
    return (o for o in OPTIONS if o.flags and o.name != "plugins")


def command_line(config: Any) -> list[str]:
    """The ``auditkit run`` arguments that reproduce ``config``: every option the command line
    can give whose value differs from the command line's default, and the pinned ones (device,
    seed). A model given as an object has no spec: ``<your model spec>`` stands in for it.
    Options only the config file can give (per-check settings, normalization) are not in it."""
    args = ["auditkit", "run", "--model", getattr(config, "model", None) or "<your model spec>"]
    for option in OPTIONS:
        if not option.flags or option.name in ("model", "progress"):
            continue
        value = getattr(config, option.name, None)
        default = option.command_default if option.command_default is not None else option.default
        if value == default and not option.pinned:
            continue
        args += option.command_args(value)
    return args


def shell_command(config: Any) -> str:
    """:func:`command_line` as one shell-quoted line."""
    return shlex.join(command_line(config))
