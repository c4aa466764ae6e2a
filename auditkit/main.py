"""Wiring of one audit, shared by the command line and the Python API: configure, load the
data and models through hooks, collect and select checks, run, report."""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Sequence

import torch
from torch import nn

from auditkit.check import Check
from auditkit.compare import find_regressions, load_report
from auditkit.config import Config, configure_check
from auditkit.data.base import AuditData
from auditkit.errors import TargetError, UsageError
from auditkit.reporters.json_report import build_report
from auditkit.session import AuditRun, AuditSession, ExitCode, resolve_device
from auditkit.target import BlackBoxTarget, Target

log = logging.getLogger(__name__)


def registered_checks(config: Config, pm: Any) -> list[tuple[type[Check], str]]:
    """Every check class the plugins provide, with the name of the plugin providing it,
    sorted by id. Two plugins providing the same id is an error."""
    found: dict[str, tuple[type[Check], str]] = {}
    for impl in pm.hook.auditkit_collect_checks.get_hookimpls():
        kwargs = {"config": config}
        for cls in impl.function(*(kwargs[a] for a in impl.argnames)) or ():
            if not (isinstance(cls, type) and issubclass(cls, Check)) or not cls.id:
                raise UsageError(
                    f"plugin {impl.plugin_name!r}: auditkit_collect_checks returned {cls!r}; "
                    "expected Check subclasses with an id"
                )
            if cls.id in found and found[cls.id][0] is not cls:
                raise UsageError(f"check id {cls.id!r} is registered twice (plugins {found[cls.id][1]!r} and {impl.plugin_name!r})")
            found[cls.id] = (cls, impl.plugin_name)
    return [found[k] for k in sorted(found)]


def collect_checks(config: Config, pm: Any) -> list[Check]:
    """Every registered check class, configured from the config's per-check tables, then
    selected and ordered by the ``auditkit_modify_checks`` implementations."""
    classes = [cls for cls, _ in registered_checks(config, pm)]
    known = {c.id for c in classes}
    for check_id in config.checks:
        if check_id not in known:
            raise UsageError(
                f"{config.source or 'config'}: [tool.auditkit.checks.\"{check_id}\"] names no registered check "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    checks = [configure_check(cls, config.check_table(cls.id), config.source or "config") for cls in classes]
    pm.hook.auditkit_modify_checks(config=config, checks=checks)
    return checks


def load_target(config: Config, pm: Any, data: AuditData, device: torch.device) -> Any:
    from auditkit.models.loaders import ModelOptions

    if not config.model:
        raise UsageError("no model given: pass --model SPEC (for example --model torchvision:resnet18)")
    options = ModelOptions(
        weights=config.weights,
        num_classes=data.num_classes,
        trust_pickle=config.trust_pickle,
        device=str(device),
        mean=tuple(config.mean) if config.mean else None,
        std=tuple(config.std) if config.std else None,
        weights_dir=config.weights_dir,
    )
    target = pm.hook.auditkit_load_model(spec=config.model, options=options, config=config)
    if target is None:
        raise UsageError(f"--model {config.model!r}: no loader accepted this spec")
    return target


def as_target(model: Any, *, device: torch.device, mean: Any = None, std: Any = None, returns: str = "scores") -> Any:
    """Wrap what the Python API was given: a Target as is, an nn.Module as a white box, any
    other callable as a black box returning ``returns``."""
    if isinstance(model, (Target, BlackBoxTarget)):
        model.device = device
        return model
    if isinstance(model, nn.Module):
        return Target(model, mean=mean, std=std, device=device, spec=type(model).__name__)
    if callable(model):
        return BlackBoxTarget(model, returns=returns, device=device)
    raise UsageError(f"model must be a spec string, an nn.Module, a Target or a callable; got {type(model).__name__}")


def probe(target: Any, data: AuditData, device: torch.device) -> None:
    """Run the target once on real images to learn its classes, layers and head; a model that
    rejects the data's images is a usage error, reported with expected and actual shapes."""
    example = next(data.batches("eval", batch_size=2)).images.to(device)
    with target:
        try:
            target.probe(example)
        except TargetError as exc:
            raise UsageError(f"{exc} (data {data.spec!r} gives images of shape {list(example.shape[1:])})") from exc
    if target.num_classes is not None and target.num_classes < data.num_classes:
        raise UsageError(
            f"{target.name} outputs {target.num_classes} classes but data {data.spec!r} has {data.num_classes}; "
            f"expected a model with at least {data.num_classes} outputs"
        )
    if target.num_classes is not None and target.num_classes > data.num_classes:
        warnings.warn(
            f"{target.name} outputs {target.num_classes} classes; the data uses the first {data.num_classes}",
            stacklevel=2,
        )


def load_baselines(
    config: Config,
    data: AuditData,
    device: torch.device,
    announce: Callable[[str], None] | None = None,
    notes: list[str] | None = None,
) -> list[Any]:
    """The classic baselines named in ``config.baselines``, trained or loaded for ``data``;
    ``announce`` receives one line per baseline saying where its weights came from.

    A mistake in what the user asked for (an unknown baseline, a bad checkpoint) is a
    ``UsageError``. A baseline that fails otherwise (training crashed, out of memory) is left
    out with a warning, so it never costs the audit of the user's model; ``notes`` collects
    those and the weak-baseline notes for the report's ``warnings``."""
    from auditkit.baselines import Budget, available, load_baseline
    from auditkit.session import progress_bar

    unknown = [b for b in config.baselines if b not in available()]
    if unknown:
        raise UsageError(f"--baselines: unknown baseline(s) {', '.join(unknown)}; expected some of {', '.join(available())} or none")
    extra = set(config.baseline_weights) - set(config.baselines)
    if extra:
        raise UsageError(f"baseline_weights names {', '.join(sorted(extra))}, which are not among the baselines {config.baselines}")
    if config.baseline_epochs < 1 or not config.baseline_seconds > 0:
        raise UsageError(
            f"baseline budget: epochs must be at least 1 and seconds above 0, got "
            f"baseline_epochs={config.baseline_epochs}, baseline_seconds={config.baseline_seconds}"
        )
    budget = Budget(max_epochs=config.baseline_epochs, max_seconds=float(config.baseline_seconds))
    progress = progress_bar(config)
    loaded = []
    notes = [] if notes is None else notes
    for arch in config.baselines:
        t0 = time.perf_counter()
        try:
            target = load_baseline(
                arch, data, device=device, seed=config.seed, checkpoint=config.baseline_weights.get(arch),
                budget=budget, progress=progress, weights_dir=config.weights_dir,
            )
        except UsageError:
            raise
        except Exception as exc:
            log.debug("baseline %s failed", arch, exc_info=True)
            notes.append(f"baseline {arch} left out: it could not be trained or loaded ({type(exc).__name__}: {exc})")
            if announce is not None:
                announce(f"warning: {notes[-1]}; the audit goes on without it")
            continue
        loaded.append(target)
        weak = target.info.get("quality", {}).get("note")
        if weak:
            notes.append(f"baseline {arch}: {weak}")
        if announce is not None:
            training = target.info.get("training") or {}
            acc = f", validation accuracy {training['val_acc']:.2f}" if "val_acc" in training else ""
            init = f" ({target.info['init']})" if target.info.get("init") else ""
            announce(f"baseline {arch}: {target.info['source']}{init}{acc} ({time.perf_counter() - t0:.1f}s)" + (f"\n  warning: {weak}" if weak else ""))
    return loaded


def run_audit(
    config: Config,
    pm: Any,
    *,
    model: Any = None,
    data: AuditData | None = None,
    reporter: Any = None,
    baselines: Sequence[Any] = (),
) -> AuditSession:
    """Run one audit end to end and return the finished session (``session.exitstatus``).

    Usage errors (bad spec, bad config, a model that rejects the data) raise ``UsageError``
    before any check runs.
    """
    config.pluginmanager = pm
    if reporter is not None:
        pm.register(reporter, name="terminalreporter")
    pm.hook.auditkit_configure(config=config)
    device = resolve_device(config.device)
    if data is None:
        data = pm.hook.auditkit_load_data(spec=config.data, config=config)
        if data is None:
            raise UsageError(f"--data {config.data!r}: no loader accepted this spec")
    if model is None:
        target = load_target(config, pm, data, device)
    else:
        target = as_target(model, device=device, mean=config.mean, std=config.std)
    target.name, target.role = "target", "target"
    checks = collect_checks(config, pm)
    previous = load_report(config.compare) if config.compare else None  # a bad path fails before any training
    announce = reporter.write if reporter is not None and reporter.verbosity >= 0 else None
    notes: list[str] = []
    baselines = list(baselines) or load_baselines(config, data, device, announce, notes)
    for t in [target, *baselines]:
        t.device = device
        probe(t, data, device)
    session = AuditSession(config, pm, data=data, target=target, baselines=baselines)
    session.warnings = notes
    session.checks = checks
    if reporter is not None:
        reporter.session_start(session)
    if checks:
        session.run(checks)
    else:
        session.exitstatus = ExitCode.NO_CHECKS_COLLECTED
    if previous is not None and not session.interrupted:
        session.regressions = find_regressions(
            build_report(session), previous, abs_tol=config.compare_abs_tolerance, rel_tol=config.compare_rel_tolerance
        )
        if session.regressions and session.exitstatus == ExitCode.OK:
            session.exitstatus = ExitCode.CHECKS_FAILED
    session.finish()
    return session


def audit(
    model: Any,
    data: AuditData | str = "synthetic:shapes",
    checks: Sequence[str] | None = None,
    *,
    keyword: str | None = None,
    baselines: Sequence[str] = (),
    baseline_weights: dict[str, str] | None = None,
    baseline_epochs: int = 15,
    baseline_seconds: float = 90.0,
    weights_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    max_images: int | None = None,
    batch_size: int = 64,
    weights: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    plugins: Sequence[object] = (),
    json: str | None = None,
    junitxml: str | None = None,
    html: str | None = None,
    md: str | None = None,
    compare: str | None = None,
    verbose: int = -1,
    autoload: bool | None = None,
) -> AuditRun:
    """Audit ``model`` on ``data`` from Python and return the results.

    :param model: a model spec string (as ``--model``), an ``nn.Module`` (white box), a
        ``Target``/``BlackBoxTarget``, or any callable mapping images in [0,1] to scores.
    :param data: an ``AuditData`` or a data spec string (as ``--data``).
    :param checks: check ids or ``family.*`` patterns to run (default: all).
    :param baselines: classic baselines to audit beside the model (``"alexnet"``,
        ``"googlenet"``, ``"resnet18"``, ``"resnet50"``); none by default here (the command
        line defaults to the three classics). Trained once per data and cached.
    :param baseline_weights: state_dict checkpoints by baseline name, instead of training.
    :param baseline_epochs, baseline_seconds: the training budget of each baseline.
    :param weights_dir: a folder of pretrained torchvision checkpoints, searched before the
        torch hub cache (for ``?weights=`` specs and the baselines).
    :param settings: per-check settings and thresholds, as the config's per-check tables:
        ``{"accuracy.clean": {"thresholds": {"top1": {"min": 0.5}}}}``.
    :param plugins: plugin objects (modules or instances) to register for this audit.
    :param json, junitxml, html, md: report paths (None: not written).
    :param compare: an earlier JSON report; regressed headline metrics fail the audit.
    :param verbose: -1 silent (default), 0 pytest-like lines, 1 verbose.
    :returns: an ``AuditRun``: ``run["accuracy.clean"].metrics["top1"]``, ``run.exit_code``,
        ``run.to_dataframe()``.
    :raises UsageError: bad model, data, settings or check names.
    """
    from auditkit.plugin_manager import get_plugin_manager
    from auditkit.reporters.terminal import TerminalReporter

    config = Config(
        model=model if isinstance(model, str) else None,
        weights=weights,
        data=data if isinstance(data, str) else getattr(data, "spec", "python"),
        select=list(checks) if checks else None,
        keyword=keyword,
        baselines=list(baselines),
        baseline_weights=dict(baseline_weights or {}),
        baseline_epochs=baseline_epochs,
        baseline_seconds=baseline_seconds,
        weights_dir=weights_dir,
        device=device,
        seed=seed,
        max_images=max_images,
        batch_size=batch_size,
        json=json,
        junitxml=junitxml,
        html=html,
        md=md,
        compare=compare,
        mean=list(mean) if mean else None,
        std=list(std) if std else None,
        verbosity=verbose,
        progress=False if verbose < 0 else None,
        checks=dict(settings or {}),
    )
    pm = get_plugin_manager(autoload=autoload, extra=plugins)
    reporter = TerminalReporter(verbosity=verbose) if verbose >= 0 else None
    session = run_audit(
        config,
        pm,
        model=None if isinstance(model, str) else model,
        data=None if isinstance(data, str) else data,
        reporter=reporter,
    )
    return AuditRun(session, session.report or {})
