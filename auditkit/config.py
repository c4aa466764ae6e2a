"""The effective configuration of an audit: command-line options over ``[tool.auditkit]`` in
pyproject.toml (or an auditkit.toml), with per-check settings and thresholds, validated."""
from __future__ import annotations

import dataclasses
import difflib
import shlex
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from auditkit.check import Check, Threshold
from auditkit.errors import UsageError
from auditkit.options import BY_FILE_KEY, BY_NAME, DEFAULT_BASELINES, OPTIONS, parse_baselines

__all__ = ["DEFAULT_BASELINES", "Config", "configure_check", "find_config_file", "parse_baselines", "validate_file_table"]


def _option_fields(cls: type) -> type:
    """Give ``cls`` one dataclass field per option of :data:`auditkit.options.OPTIONS`, in
    the table's order, before the fields ``cls`` declares itself."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    annotations: dict[str, Any] = {}
    for option in OPTIONS:
        name = option.type.__name__
        annotations[option.name] = name if option.default is not None else f"{name} | None"
        setattr(cls, option.name, field(default_factory=option.initial))
    cls.__annotations__ = {**annotations, **own}
    return cls


@dataclass(init=False)
@_option_fields
class Config:
    """Every setting of one audit: one field per option of :data:`auditkit.options.OPTIONS`
    (``config.seed``, ``config.selected_checks``, ``config.check_settings``, ...), then where
    the settings came from. Reporters write ``to_json()`` into the report.

    ``Config(**values)`` takes the options by name or by their config-file key (``select``,
    ``checks``); an unknown name is a ``TypeError``.
    """

    source: str | None = None  # the config file read, if any
    rootdir: str = "."
    invocation: list[str] | None = None
    options: Any = None  # the parsed argparse namespace (plugins' own options)
    pluginmanager: Any = field(default=None, repr=False)

    def __init__(self, **values: Any) -> None:
        for key in [k for k in values if k in BY_FILE_KEY and k not in BY_NAME]:
            name = BY_FILE_KEY[key].name
            if name in values:
                raise TypeError(f"Config() got both {key!r} and {name!r}, which name the same option")
            values[name] = values.pop(key)
        for f in dataclasses.fields(self):
            if f.name in values:
                value = values.pop(f.name)
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            setattr(self, f.name, value)
        if values:
            unknown = ", ".join(map(repr, values))
            raise TypeError(f"Config() got unexpected keyword argument(s) {unknown}{_suggest(next(iter(values)), BY_NAME)}")

    # The config-file and report keys of two options, for code written against them.
    @property
    def select(self) -> list[str] | None:
        """The ``--checks`` selection (``selected_checks``), by its config-file key."""
        return self.selected_checks

    @select.setter
    def select(self, value: list[str] | None) -> None:
        self.selected_checks = value

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """The per-check tables (``check_settings``), by their config-file key."""
        return self.check_settings

    @checks.setter
    def checks(self, value: dict[str, dict[str, Any]]) -> None:
        self.check_settings = value

    def to_json(self) -> dict[str, Any]:
        """The report's ``config``: every option by its config-file key, where the settings
        came from, and the command line (when there was one)."""
        out = {o.file_key: getattr(self, o.name) for o in OPTIONS if o.file_key}
        out.update(source=self.source, rootdir=self.rootdir)
        if self.invocation:
            out["command"] = " ".join(self.invocation)
        return out

    @classmethod
    def from_json(cls, recorded: Mapping[str, Any]) -> "Config":
        """The configuration a report's ``config`` records (:meth:`to_json` read back); keys
        this version does not know are left out."""
        known = {k: v for k, v in recorded.items() if k in BY_FILE_KEY or k in ("source", "rootdir")}
        config = cls(**known)
        if recorded.get("command"):
            config.invocation = shlex.split(str(recorded["command"]))
        return config

    def check_table(self, check_id: str) -> dict[str, Any]:
        """The config table of one check (its settings and ``thresholds``), a copy."""
        return dict(self.check_settings.get(check_id, {}))


def find_config_file(rootdir: Path, explicit: str | None = None) -> tuple[Path | None, dict[str, Any]]:
    """Return the config file used and its auditkit table: ``explicit`` if given, else
    ./auditkit.toml, else ./pyproject.toml when it has a [tool.auditkit] table."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"--config {explicit}: no such file")
        return path, _read_table(path)
    for candidate in (rootdir / "auditkit.toml", rootdir / "pyproject.toml"):
        if candidate.is_file():
            table = _read_table(candidate)
            if table or candidate.name == "auditkit.toml":
                return candidate, table
    return None, {}


def _read_table(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc
    if path.name == "pyproject.toml":
        return doc.get("tool", {}).get("auditkit", {})
    # auditkit.toml: the keys at top level, or under [tool.auditkit] like pyproject.toml.
    return doc.get("tool", {}).get("auditkit", doc)


def validate_file_table(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Check the top-level keys and types of a [tool.auditkit] table; return its values by
    the config-file key."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        option = BY_FILE_KEY.get(key)
        if option is None:
            raise UsageError(f"{source}: unknown key {key!r} in [tool.auditkit]{_suggest(key, BY_FILE_KEY)}")
        ok_types = option.accepted_file_types
        if option.type is int and isinstance(value, bool) or not isinstance(value, ok_types):
            names = " or ".join(t.__name__ for t in ok_types)
            raise UsageError(f"{source}: [tool.auditkit] {key} must be {names}, got {type(value).__name__} {value!r}")
        out[key] = parse_baselines(value) if option.name == "baselines" and isinstance(value, str) else value
    return out


def configure_check(check_cls: type[Check], table: Mapping[str, Any], source: str) -> Check:
    """Instantiate ``check_cls`` with the settings and thresholds of its config table."""
    table = dict(table)
    raw_thresholds = table.pop("thresholds", None)
    fields = check_cls.setting_fields()
    hints = typing.get_type_hints(check_cls.Settings)
    values = {}
    where = f'{source}: [tool.auditkit.checks."{check_cls.id}"]'
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise UsageError(f"{where}: unknown setting {key!r}{_suggest(key, fields)} (settings: {known}, thresholds)")
        values[key] = coerce(value, hints.get(key, Any), f"{where} {key}")
    settings = check_cls.Settings(**values)
    thresholds = list(check_cls.thresholds)
    if raw_thresholds is not None:
        if not isinstance(raw_thresholds, Mapping):
            raise UsageError(f"{where}: thresholds must be a table like {{ top1 = {{ min = 0.5 }} }}")
        declared = check_cls.reported_metrics(settings)
        for metric in raw_thresholds:
            if not check_cls.may_report(metric, settings):
                close = _closest(metric, declared)
                hint = f"; did you mean {close!r}?" if close else ""
                raise UsageError(
                    f"{where} thresholds: unknown metric {metric!r}{hint} "
                    f"({check_cls.id} reports: {', '.join(declared)})"
                )
        overridden = set(raw_thresholds)
        thresholds = [t for t in thresholds if t.metric not in overridden]
        for metric, spec in raw_thresholds.items():
            thresholds.extend(parse_threshold(metric, spec, where))
    return check_cls(settings, tuple(thresholds))


def parse_threshold(metric: str, spec: Any, where: str) -> list[Threshold]:
    """``{min = 0.5}``, ``{max = 0.1}``, ``{min = 0.9, baseline = "resnet18"}``, or
    ``false`` to drop the default threshold on this metric."""
    if spec is False:
        return []
    if not isinstance(spec, Mapping) or not spec or set(spec) - {"min", "max", "baseline"}:
        raise UsageError(
            f"{where}: threshold for {metric!r} must be a table with 'min' and/or 'max' "
            f"(and optionally 'baseline'), or false; got {spec!r}"
        )
    out = []
    baseline = spec.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise UsageError(f"{where}: threshold baseline for {metric!r} must be a model name, got {baseline!r}")
    for op in ("min", "max"):
        if op in spec:
            value = spec[op]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where}: threshold {metric}.{op} must be a number, got {value!r}")
            out.append(Threshold(metric, op, float(value), baseline))
    return out


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting where lossless (int -> float,
    list -> tuple); raise UsageError naming the expected type otherwise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except UsageError as exc:
                errors.append(exc)
        raise UsageError(f"{where} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise UsageError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], where) for v in value)
        if origin is tuple and args:
            if len(args) != len(value):
                raise UsageError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, where) for v, a in zip(value, args))
        items = [coerce(v, args[0], where) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"{where} must be a table, got {type(value).__name__}")
        return dict(value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type):
        if isinstance(value, hint):
            return value
    else:
        return value
    raise UsageError(f"{where} must be {_type_name(hint)}, got {type(value).__name__} {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _suggest(key: str, known: Mapping[str, Any] | list[str] | tuple[str, ...]) -> str:
    close = _closest(key, known)
    return f" (did you mean {close!r}?)" if close else ""


def _closest(key: str, known: Mapping[str, Any] | list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(key, list(known), n=1)
    return close[0] if close else None
