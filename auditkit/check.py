"""Checks and their results: the Check base class, Findings (what a check measured),
CheckResult (the frozen record reporters read) with its typed parts (Curve), Outcome, and
skip()/xfail()."""
from __future__ import annotations

import base64
import dataclasses
import enum
import fnmatch
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from auditkit.context import AuditContext


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    ERROR = "error"


class Skipped(BaseException):
    """Raised by :func:`skip`; the check ends with outcome ``skipped`` and the reason.

    A ``BaseException``, as pytest's own outcomes: a broad ``except Exception`` in a check
    or in the model's code cannot swallow it."""


class XFailed(BaseException):
    """Raised by :func:`xfail`; the check ends with outcome ``xfailed`` and the reason.

    A ``BaseException`` for the same reason as :class:`Skipped`."""


def skip(reason: str) -> None:
    """End the running check as skipped, with ``reason`` shown in every report."""
    raise Skipped(reason)


def xfail(reason: str) -> None:
    """End the running check as an expected failure, with ``reason`` shown in every report."""
    raise XFailed(reason)


@dataclass(frozen=True)
class Threshold:
    """A pass condition on one metric: ``metric >= value`` (op ``min``) or ``metric <= value``
    (op ``max``). With ``baseline`` set, ``value`` is a factor applied to that baseline's own
    value of the same metric ("no worse than 0.9 x resnet18's")."""

    metric: str
    op: str  # "min" or "max"
    value: float
    baseline: str | None = None

    def __post_init__(self) -> None:
        if self.op not in ("min", "max"):
            raise ValueError(f"threshold op must be 'min' or 'max', got {self.op!r}")

    def describe(self) -> str:
        sym = ">=" if self.op == "min" else "<="
        if self.baseline:
            return f"{self.metric} {sym} {self.value:g} x {self.baseline}"
        return f"{self.metric} {sym} {self.value:g}"

    def violated_by(self, value: float, reference: float | None = None) -> bool:
        """Whether ``value`` (against the baseline's ``reference`` for a relative threshold)
        breaks the condition. A NaN value or a missing or NaN reference is no evidence either
        way and violates nothing: the session skips such a result as insufficient evidence
        instead. ``inf`` is a value like any other."""
        bound = self.value if self.baseline is None else self.value * (reference if reference is not None else math.nan)
        if math.isnan(value) or math.isnan(bound):
            return False
        return value < bound if self.op == "min" else value > bound

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "value": self.value}
        if self.baseline:
            out["baseline"] = self.baseline
        return out


@dataclass
class Artifact:
    """Something a check keeps for the reports: an image (PNG bytes), a curve (x/y lists),
    or a table. ``kind`` tells the reporters how to render ``data``."""

    name: str
    kind: str  # "image/png" | "curve" | "table" | "text"
    data: Any
    caption: str = ""


@dataclass(frozen=True)
class CurvePoint:
    """One measured point of a :class:`Curve`: ``value`` at ``x`` (the budget epsilon for a
    curve against a norm), with its confidence interval ``[lo, hi]`` when the check has one.
    A value that could not be computed is NaN (null in JSON)."""

    x: float
    value: float
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Curve:
    """A measured curve, kept as data so reports read it without parsing metric names.

    ``metric`` is the family it plots (``robust_acc``, ``transfer_success``): for a curve
    against a perturbation budget (``norm`` ``"linf"`` or ``"l2"``) each point's value is
    also reported as the metric ``<metric>@<budget>`` (thresholds and ``--compare`` use the
    metrics; charts use the curve). ``variant`` tells curves of the same metric and norm apart
    (an attack's name; empty for the check's main curve); ``name`` is unique within a result.
    ``label`` names the series, ``x_label``/``y_label`` the axes, ``caption`` what it shows.
    """

    name: str
    metric: str
    points: tuple[CurvePoint, ...]
    norm: str | None = None
    variant: str = ""
    label: str = ""
    x_label: str = "epsilon"
    y_label: str = ""
    caption: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "metric": self.metric}
        if self.norm is not None:
            out["norm"] = self.norm
        if self.variant:
            out["variant"] = self.variant
        out.update(label=self.label, x_label=self.x_label, y_label=self.y_label, caption=self.caption)
        out["points"] = [
            {"x": _json_number(p.x), "value": _json_number(p.value),
             **{k: _json_number(v) for k, v in (("lo", p.lo), ("hi", p.hi)) if v is not None}}
            for p in self.points
        ]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Curve":
        def number(v: Any) -> float:
            return math.nan if v is None else float(v)

        points = tuple(
            CurvePoint(number(p.get("x")), number(p.get("value")),
                       None if "lo" not in p else number(p["lo"]), None if "hi" not in p else number(p["hi"]))
            for p in data.get("points") or ()
        )
        return cls(
            name=str(data["name"]), metric=str(data.get("metric", data["name"])), points=points,
            norm=data.get("norm"), variant=str(data.get("variant", "")), label=str(data.get("label", "")),
            x_label=str(data.get("x_label", "epsilon")), y_label=str(data.get("y_label", "")),
            caption=str(data.get("caption", "")),
        )


@dataclass
class Findings:
    """What a check's ``run`` returns: numbers, artifacts, and optionally its own verdict.

    ``failures`` lists reasons the check failed on its own terms (a broken identity, a raised
    flag); thresholds from the check's defaults and the config are applied on top by the session.
    ``curves`` are the check's measured curves (:class:`Curve`), which reports draw as they are.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    failures: list[str] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    curves: list[Curve] = field(default_factory=list)


@dataclass(frozen=True)
class CheckResult:
    """The frozen, serializable record of one check on one model."""

    check: str
    model: str
    outcome: Outcome
    metrics: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    message: str = ""
    duration_s: float = 0.0
    traceback: str | None = None
    headline: tuple[str, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    role: str = "target"
    directions: Mapping[str, str] = field(default_factory=dict)
    curves: tuple[Curve, ...] = ()

    @property
    def nodeid(self) -> str:
        return f"{self.model}::{self.check}"

    @property
    def is_verdict(self) -> bool:
        """Passed or failed: its numbers decided something. A skipped result may keep numbers
        measured on too little evidence; comparison tables leave those out."""
        return self.outcome in (Outcome.PASSED, Outcome.FAILED)

    def headline_metrics(self) -> dict[str, float]:
        names = [m for m in self.headline if m in self.metrics] or list(self.metrics)[:3]
        return {m: self.metrics[m] for m in names}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "check": self.check,
            "model": self.model,
            "role": self.role,
            "outcome": self.outcome.value,
            "metrics": {k: _json_number(v) for k, v in self.metrics.items()},
            "thresholds": {k: dict(v) for k, v in self.thresholds.items()},
            "message": self.message,
            "duration_s": round(self.duration_s, 4),
        }
        if self.headline:
            out["headline"] = [m for m in self.headline if m in self.metrics]
        if self.directions:
            out["directions"] = dict(self.directions)
        if self.traceback:
            out["traceback"] = self.traceback
        if self.details:
            out["details"] = _jsonable(self.details)
        nonfinite = {k: _nonfinite_name(v) for k, v in self.metrics.items() if not math.isfinite(float(v))}
        if nonfinite:
            out["nonfinite"] = nonfinite
        if self.artifacts:
            out["artifacts"] = [artifact_to_json(a) for a in self.artifacts]
        if self.curves:
            out["curves"] = [c.to_json() for c in self.curves]
        return out

    def curve(self, metric: str, norm: str | None = None, variant: str = "") -> Curve | None:
        """The curve of ``metric`` (against ``norm``, of ``variant``), or None."""
        return next((c for c in self.curves if (c.metric, c.norm, c.variant) == (metric, norm, variant)), None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "CheckResult":
        """The result back from :meth:`to_json`'s dict (a JSON report's ``results`` entry):
        metrics (non-finite values restored from ``nonfinite``), thresholds, details, curves and
        artifacts with their data, so reports such as the scorecard can be rebuilt from the
        JSON alone. Non-finite numbers inside ``details`` come back as None."""
        special = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
        nonfinite = data.get("nonfinite") or {}
        metrics = {
            k: special[nonfinite[k]] if k in nonfinite else (math.nan if v is None else float(v))
            for k, v in (data.get("metrics") or {}).items()
        }
        return cls(
            check=str(data["check"]),
            model=str(data["model"]),
            outcome=Outcome(data["outcome"]),
            metrics=metrics,
            thresholds={k: dict(v) for k, v in (data.get("thresholds") or {}).items()},
            message=str(data.get("message", "")),
            duration_s=float(data.get("duration_s", 0.0)),
            traceback=data.get("traceback"),
            headline=tuple(data.get("headline") or ()),
            artifacts=tuple(artifact_from_json(a) for a in data.get("artifacts") or ()),
            details=dict(data.get("details") or {}),
            role=str(data.get("role", "target")),
            directions=dict(data.get("directions") or {}),
            curves=tuple(Curve.from_json(c) for c in data.get("curves") or ()),
        )


def _nonfinite_name(v: float) -> str:
    v = float(v)
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def artifact_to_json(artifact: Artifact) -> dict[str, Any]:
    """An artifact as JSON: bytes (PNG images) base64-encoded with ``"encoding": "base64"``,
    curves, tables and text as they are (non-finite numbers become null)."""
    out: dict[str, Any] = {"name": artifact.name, "kind": artifact.kind, "caption": artifact.caption}
    if isinstance(artifact.data, (bytes, bytearray)):
        out.update(encoding="base64", data=base64.b64encode(bytes(artifact.data)).decode("ascii"))
    else:
        out["data"] = _jsonable(artifact.data)
    return out


def artifact_from_json(data: Mapping[str, Any]) -> Artifact:
    payload = data.get("data")
    if data.get("encoding") == "base64" and isinstance(payload, str):
        payload = base64.b64decode(payload)
    return Artifact(str(data["name"]), str(data["kind"]), payload, str(data.get("caption", "")))


def _json_number(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return _json_number(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return str(obj)


# A forward+backward image pass costs about this many forward passes (the backward computes
# gradients of the activations and of the weights: about twice the forward's work; Kaplan et
# al. 2020 count 2N FLOPs forward and 4N backward per parameter and token).
GRADIENT_PASS_FORWARDS = 3.0


@dataclass(frozen=True)
class Cost:
    """What a check's run costs, counted before it runs: image passes through the audited model.

    :ivar forward: images through a forward pass without a backward (scoring, queries).
    :ivar gradient: images through a forward pass with a backward (to the input or to a layer:
        attack steps, Grad-CAM maps, inversion steps), each about
        :data:`GRADIENT_PASS_FORWARDS` forward passes of work.
    :ivar note: what else the run costs, in words (a proxy model's training, say), or "".
    :ivar maximum: the counts are the most the run may make (it stops early where an attack
        has fooled an image, say), not what it will make.

    Counts, not seconds: the same settings, data and model give the same counts on any
    machine. The terminal turns them into a time from the model's measured clean pass.
    """

    forward: int = 0
    gradient: int = 0
    note: str = ""
    maximum: bool = False

    def __post_init__(self) -> None:
        if self.forward < 0 or self.gradient < 0:
            raise ValueError(f"a cost counts image passes (>= 0), got forward={self.forward}, gradient={self.gradient}")

    @property
    def forward_equivalents(self) -> float:
        """The cost in forward image passes: forward + GRADIENT_PASS_FORWARDS * gradient."""
        return self.forward + GRADIENT_PASS_FORWARDS * self.gradient

    def __add__(self, other: "Cost") -> "Cost":
        note = "; ".join(n for n in (self.note, other.note) if n)
        return Cost(self.forward + other.forward, self.gradient + other.gradient, note, self.maximum or other.maximum)

    def times(self, k: int) -> "Cost":
        """This cost made ``k`` times (the note once)."""
        return Cost(self.forward * k, self.gradient * k, self.note, self.maximum)

    def describe(self) -> str:
        """``"2,496 forward and 5,600 forward+backward image passes"`` (zero terms left out)."""
        parts = []
        if self.forward:
            parts.append(f"{self.forward:,} forward")
        if self.gradient:
            parts.append(f"{self.gradient:,} forward+backward")
        text = f"{' and '.join(parts)} image passes" if parts else "no image passes"
        return f"{text}; {self.note}" if self.note else text

    def to_json(self) -> dict[str, Any]:
        return {
            "forward": self.forward, "gradient": self.gradient,
            **({"note": self.note} if self.note else {}), **({"maximum": True} if self.maximum else {}),
        }


class Check:
    """One audit test, run once per model (the target and each baseline).

    Subclasses set the class attributes and implement :meth:`run`::

        class CleanAccuracy(Check):
            id = "accuracy.clean"
            requires = ("labels",)
            headline = ("top1",)
            metrics = ("top1", "n_images")

            @dataclass
            class Settings:
                max_images: int | None = None

            def run(self, ctx):
                ...
                return Findings(metrics={"top1": top1, "n_images": n})

    ``requires`` names capabilities of the target (``white_box``, ``layers``, ``gap_head``,
    ``scores``) or of the data (``labels``, ``localization``); a check whose requirements are
    not met is skipped with the reason. ``metrics`` declares every metric name the check may
    report, as exact names and fnmatch patterns for names built at run time (``"robust_acc@*"``,
    ``"*.psnr"``); a threshold in the config on a name it does not declare is a usage error
    with "did you mean". Override :meth:`reported_metrics` when the names follow from the
    settings (one per configured epsilon). A check that declares none is not validated.
    ``directions`` maps metric names (fnmatch patterns such as ``"robust_acc@*"``, the first
    match wins) to ``"higher"`` or ``"lower"`` (which is better), or to None for a reference
    value with no better side (a control, a count, a property of the data); reports use it to
    mark the better model and ``--compare`` to find regressions, and a metric it does not
    mention is never marked. Declare every metric (:meth:`declares`). ``headline`` names the
    metrics reports show first. ``quick_settings`` are settings for a short run (the demo's),
    given as a per-check config table would give them. ``Settings`` is a dataclass whose fields are the
    check's typed settings; config tables override them. ``thresholds`` are default pass
    conditions, overridable from config. ``needs_train_split`` (False, True, or a phrase such
    as "for the transfer proxy's queries") declares that the check trains on the data's train
    split; when the data has none, the host holds out a share of the evaluation images for it
    and says so.

    A verdict needs evidence. ``min_sample`` is the smallest value of the metric named by
    ``sample_metric`` (default ``n_images``: the images the rule was computed on) on which the
    check's rule means something; below it, or when the check does not report that metric,
    the outcome is skipped as "insufficient evidence" with the count, never passed or failed.
    ``constant_sensitive`` declares that the check's rule says nothing about a model that
    predicts one class for every image (an attack cannot change a constant output): such a
    model's result is then skipped with that reason.

    ``shards`` declares that the check divides its work over the processes of an audit
    started by torchrun (:mod:`auditkit.distributed`): it runs on every process, its
    ``ctx.batches()`` yields that process's share of the evaluation batches, each batch
    drawing its random numbers afresh from the check's seed and the batch's number, and it
    merges what it counted with ``ctx.world.all_sum`` and ``ctx.world.gather_rows`` before
    computing its metrics, so that one process and N give the same result. A check that does
    not shard (the default) runs once, on rank 0, whose result every process receives.
    """

    id: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    headline: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[tuple[str, ...]] = ()
    thresholds: ClassVar[tuple[Threshold, ...]] = ()
    directions: ClassVar[dict[str, str | None]] = {}
    quick_settings: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""
    needs_train_split: ClassVar[bool | str] = False
    min_sample: ClassVar[int] = 0
    sample_metric: ClassVar[str] = "n_images"
    constant_sensitive: ClassVar[bool] = False
    shards: ClassVar[bool] = False

    @dataclass
    class Settings:
        pass

    def __init__(self, settings: Any = None, thresholds: tuple[Threshold, ...] | None = None):
        self.settings = settings if settings is not None else self.Settings()
        self.active_thresholds = tuple(self.thresholds) if thresholds is None else tuple(thresholds)

    def run(self, ctx: "AuditContext") -> Findings:  # pragma: no cover - abstract
        raise NotImplementedError

    def estimate(self, ctx: "AuditContext") -> Cost | None:
        """What :meth:`run` will cost on this model with these settings, or None (the default:
        no estimate).

        Called just before :meth:`run`, it must be cheap: read the settings, ``ctx.n_images``
        and the shared clean pass (``ctx.clean``, computed once anyway), never run the model.
        Count the image passes :meth:`run` makes (an image through the network once is one
        pass, wherever the pass stops); where they depend on what happens (an attack that
        stops early), count the most it may make. The terminal announces the estimate as
        ``<model> :: <check>: about ... image passes, ~N s`` when it is long, before the
        run starts, and the result's details keep it as ``estimated_cost``.
        """
        return None

    @classmethod
    def summary(cls) -> str:
        doc = cls.description or (cls.__doc__ or "").strip().splitlines()[0:1]
        return doc if isinstance(doc, str) else (doc[0] if doc else "")

    @classmethod
    def direction(cls, metric: str) -> str | None:
        """``"higher"``/``"lower"`` when ``directions`` says which is better for ``metric``;
        None when it declares no better side or does not mention the metric."""
        for pattern, direction in cls.directions.items():
            if fnmatch.fnmatchcase(metric, pattern):
                return direction
        return None

    @classmethod
    def declares(cls, metric: str) -> bool:
        """Whether ``directions`` mentions ``metric`` (with a direction or as a reference value)."""
        return any(fnmatch.fnmatchcase(metric, pattern) for pattern in cls.directions)

    @classmethod
    def reported_metrics(cls, settings: Any) -> tuple[str, ...]:
        """The metric names (exact, or fnmatch patterns) this check may report when run with
        ``settings``; config thresholds are validated against them.

        The default is :attr:`metrics`. Override it to narrow the declaration to what the
        settings produce (``robust_acc@linf_2/255`` only when 2/255 is a configured budget);
        every name returned must still match :attr:`metrics`. Empty means undeclared: any
        threshold is accepted.
        """
        return tuple(cls.metrics)

    @classmethod
    def may_report(cls, metric: str, settings: Any = None) -> bool:
        """False only when the check declares its metrics (for ``settings``, the defaults when
        None) and ``metric`` matches none of them. ``metric`` is an exact name: a pattern such
        as ``robust_acc@*`` is never reported (thresholds apply to exact names only)."""
        declared = cls.reported_metrics(cls.Settings() if settings is None else settings)
        if not declared:
            return True
        return not any(c in metric for c in "*?[") and any(fnmatch.fnmatchcase(metric, p) for p in declared)

    @classmethod
    def setting_fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls.Settings)}
