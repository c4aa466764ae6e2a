"""Wiring of one audit, shared by the command line and the Python API: configure, load the
data and models through hooks, collect and select checks, run, report."""
from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from auditkit.check import Check
from auditkit.compare import comparable, find_regressions, load_report
from auditkit.config import Config, configure_check
from auditkit.data.base import DEFAULT_TRAIN_FRACTION, AuditData
from auditkit.errors import ExitCode, TargetError, UsageError
from auditkit.records import in_memory_limit
from auditkit.outputs import check_output_paths
from auditkit.device import resolve_device
from auditkit.options import BY_NAME, OPTIONS
from auditkit.results import AuditRun
from auditkit.seeding import preserved_random_state
from auditkit.threads import torch_threads
from auditkit.session import AuditSession
from auditkit.target import BlackBoxTarget, Target

log = logging.getLogger(__name__)

#: What a check id looks like: ``family.name`` (more dotted parts allowed), lower case.
CHECK_ID = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")


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
            if not CHECK_ID.fullmatch(cls.id):
                raise UsageError(
                    f"plugin {impl.plugin_name!r}: check id {cls.id!r} is not valid; expected 'family.name' in lower "
                    "case letters, digits and _ (e.g. 'gradcam.localization')"
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
    for check_id in config.check_settings:
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
        device=device,
        mean=tuple(config.mean) if config.mean else None,
        std=tuple(config.std) if config.std else None,
        weights_dir=config.weights_dir,
        seed=config.seed,
        offline=config.offline,
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


def fit_data(target: Any, data: AuditData) -> str | None:
    """Bring the data's images to a size ``target`` takes (:meth:`AuditData.fit_to`), from
    what the target declares: ``expected_preprocess`` (its own evaluation preprocessing, when
    the model loader knows it) and ``input_size`` (when fixed before the first forward pass).
    Returns the line to show when images are resized by auditkit's choice, else None."""
    name = getattr(target, "spec", None) or getattr(target, "name", "the model")
    return data.fit_to(
        getattr(target, "input_size", None), getattr(target, "expected_preprocess", None), f"as {name} expects"
    )


def train_split_purposes(config: Config, checks: Sequence[Check], data: AuditData, *, baselines_given: bool = False) -> list[str]:
    """Why this audit needs a train split, each as it reads after "held out": the baselines it
    will train on the data (:func:`auditkit.baselines.needs_train_split`: not those with a
    checkpoint, pretrained weights used as they are, or generated data), and the selected
    checks that declare ``needs_train_split`` (True, or a phrase such as "to train the
    transfer proxy"). Empty when nothing is trained."""
    purposes = []
    if not baselines_given:
        trained = [arch for arch in config.baselines if _baseline_trains(arch, config, data)]
        if trained:
            purposes.append(f"to train the baselines ({', '.join(trained)})")
    for check in checks:
        need = getattr(check, "needs_train_split", False)
        if need:
            purposes.append(need if isinstance(need, str) else f"for {check.id}")
    return purposes


def _baseline_trains(arch: str, config: Config, data: AuditData) -> bool:
    from auditkit.baselines import needs_train_split

    return needs_train_split(arch, data, checkpoint=config.baseline_weights.get(arch), init=config.baseline_init)


def probe(target: Any, data: AuditData, device: torch.device) -> None:
    """Run the target once on real images to learn its classes, layers and head; a model that
    rejects the data's images is a usage error, reported with expected and actual shapes.
    Drawing the batch checks its pixels: images outside [0,1] are a usage error here, before
    any check runs."""
    example = next(data.batches("eval", batch_size=2)).images.to(device)
    expect_classes = getattr(target, "expect_classes", None)  # a plugin's own target may lack it
    if expect_classes is not None:
        expect_classes(data.num_classes)
    with target:
        try:
            target.probe(example)
        except TargetError as exc:
            size = data.preprocessing.get("description", "")
            expected = getattr(exc, "expected_size", None)
            if expected and expected[0] == expected[1]:
                fix = f"give ?size={expected[0]} (or ?crop={expected[0]}) in the data spec"
            elif expected:
                fix = f"the model takes {expected[0]}x{expected[1]} images: resize the data to that"
            else:
                fix = "if the model needs another size, give ?crop=N or ?size=N in the data spec"
            raise UsageError(
                f"{exc} (probed with images of shape {list(example.shape[1:])} from data {data.spec!r}, {size}; {fix})"
            ) from exc
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
    those, the weak-baseline notes and the trainings stopped by the wall-time cap for the
    report's ``warnings``.

    The budget: ``baseline_steps`` optimizer steps (default
    :data:`auditkit.baselines.training.DEFAULT_STEPS`), or ``baseline_epochs`` passes over the
    train split's size; ``baseline_seconds`` only caps each training's wall time."""
    from auditkit.baselines import INITS, Budget, available, load_baseline
    from auditkit.baselines.training import DEFAULT_STEPS
    from auditkit.progress import progress_bar

    unknown = [b for b in config.baselines if b not in available()]
    if unknown:
        raise UsageError(f"--baselines: unknown baseline(s) {', '.join(unknown)}; expected some of {', '.join(available())} or none")
    extra = set(config.baseline_weights) - set(config.baselines)
    if extra:
        raise UsageError(f"baseline_weights names {', '.join(sorted(extra))}, which are not among the baselines {config.baselines}")
    steps, epochs = config.baseline_steps, config.baseline_epochs
    if steps is not None and epochs is not None:
        raise UsageError(f"baseline budget: give baseline_steps ({steps}) or baseline_epochs ({epochs}), not both")
    if (steps is not None and steps < 1) or (epochs is not None and epochs < 1) or not config.baseline_seconds > 0:
        raise UsageError(
            f"baseline budget: steps and epochs must be at least 1 and the seconds cap above 0, got "
            f"baseline_steps={steps}, baseline_epochs={epochs}, baseline_seconds={config.baseline_seconds}"
        )
    if config.baseline_init not in INITS:
        raise UsageError(f"baseline_init {config.baseline_init!r}: expected one of {', '.join(INITS)}")
    budget = Budget(steps=steps or DEFAULT_STEPS, epochs=epochs, max_seconds=float(config.baseline_seconds))
    progress = progress_bar(config)
    loaded = []
    notes = [] if notes is None else notes
    for arch in config.baselines:
        t0 = time.perf_counter()
        try:
            target = load_baseline(
                arch, data, device=device, seed=config.seed, checkpoint=config.baseline_weights.get(arch),
                budget=budget, progress=progress, weights_dir=config.weights_dir, init=config.baseline_init,
                offline=config.offline,
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
        training = target.info.get("training") or {}
        warned = []
        if training.get("stopped") == "time_cap":
            warned.append(
                f"the wall-time cap (baseline_seconds={training.get('max_seconds', config.baseline_seconds):g}) stopped "
                f"its training after {training['steps']} of {training['steps_budget']} steps: the result depends on "
                "this machine's speed; give a smaller --baseline-steps, a larger --baseline-seconds, or a GPU"
            )
        weak = target.info.get("quality", {}).get("note")
        if weak:
            warned.append(weak)
        notes.extend(f"baseline {arch}: {w}" for w in warned)
        if announce is not None:
            acc = f", validation accuracy {training['val_acc']:.2f}" if "val_acc" in training else ""
            steps_run = f", {training['steps']} steps" if "steps" in training else ""
            init = f" ({target.info['init']})" if target.info.get("init") else ""
            announce(
                f"baseline {arch}: {target.info['source']}{init}{steps_run}{acc} ({time.perf_counter() - t0:.1f}s)"
                + "".join(f"\n  warning: {w}" for w in warned)
            )
    return loaded


@contextlib.contextmanager
def warnings_to_report(notes: list[str], announce: Callable[[str], None] | None) -> Iterator[None]:
    """Route Python warnings raised while the block runs (by auditkit, a plugin or a library)
    to the user the way auditkit's own warnings go: a ``warning:`` line on the terminal and an
    entry in the report's ``warnings`` (appended to ``notes``), each distinct message once,
    instead of a raw ``UserWarning`` with its source line on stderr."""
    seen: set[str] = set()

    def route(message: Warning | str, category: type[Warning], filename: str, lineno: int, *args: Any) -> None:
        text = str(message).strip()
        if text in seen:
            return
        seen.add(text)
        notes.append(text)
        if announce is not None:
            announce(f"warning: {text}")

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        warnings.showwarning = route
        yield


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

    Usage errors (bad spec, bad config, a model that rejects the data, images outside
    [0,1]) raise ``UsageError`` before any check runs.

    The data, in order: loaded (or copied, when given, so the caller's object is left as it
    was); once the model is loaded and the checks collected, when something must be trained
    (:func:`train_split_purposes`) and the data has no train split, a hash-chosen share is
    held out of the evaluation images (:meth:`AuditData.carve_train`; said on the terminal
    and in the report's warnings); then its images are brought to a size the model takes
    (:func:`fit_data`, said on the terminal when auditkit chose to resize); the baselines are
    built for that size and trained on the train split; then the first batch is drawn by
    :func:`probe`, which also checks its pixels.
    """
    from auditkit.distributed import device_for_rank, other_rank, shutdown, world_from_environment

    if other_rank():
        # one of several processes: rank 0 alone prints and writes (auditkit.distributed)
        reporter = None
        config.verbosity, config.progress = -1, False
    announce = reporter.write if reporter is not None and reporter.verbosity >= 0 else None
    notes: list[str] = []  # the report's warnings; the session's list, so later ones land there too
    world = None
    with warnings_to_report(notes, announce), torch_threads(config.threads), contextlib.ExitStack() as stack:
        stack.callback(lambda: shutdown(world) if world is not None else None)
        config.pluginmanager = pm
        if reporter is not None:
            pm.register(reporter, name="terminalreporter")
        pm.hook.auditkit_configure.call_historic(kwargs=dict(config=config))
        check_output_paths(config)  # before anything loads: a typo in --html must not cost an hour's audit
        in_memory_limit()  # AUDITKIT_RECORDS_IN_MEMORY, read where the records are made: a typo says so now
        previous = load_report(config.compare) if config.compare else None
        checks = collect_checks(config, pm)  # before anything loads: a config typo must not wait for the model
        # once: every loader and the session get this torch.device (under torchrun, its own GPU)
        device = device_for_rank(resolve_device(config.device))
        world = world_from_environment(device)
        if world.distributed and announce is not None:
            announce(f"{world.size} processes ({world.backend}): the evaluation batches are shared out among them")
        if data is None:
            data = pm.hook.auditkit_load_data(spec=config.data, config=config)
            if data is None:
                raise UsageError(f"--data {config.data!r}: no loader accepted this spec")
        else:
            data = copy.copy(data)  # fit_to and carve_train replace its splits; the caller's object stays as given
        if model is None:
            target = load_target(config, pm, data, device)
        else:
            target = as_target(model, device=device, mean=config.mean, std=config.std)
        target.name, target.role = "target", "target"
        if data.train is None or len(data.train) == 0:
            purposes = train_split_purposes(config, checks, data, baselines_given=bool(baselines))
            held_out = data.carve_train(DEFAULT_TRAIN_FRACTION, " and ".join(purposes)) if purposes else None
            if held_out:
                notes.append(held_out)
                if announce is not None:
                    announce(f"warning: {held_out}")
        resized = fit_data(target, data)  # after any carving: the size rule reads the evaluation split
        if resized and announce is not None:
            announce(resized)
        if previous is not None:  # before any training: a comparison that cannot mean anything is refused
            for note in comparable(previous, config, data, target, config.compare):
                notes.append(note)
                if announce is not None:
                    announce(f"warning: {note}")
        if baselines or not world.distributed:
            baselines = list(baselines) or load_baselines(config, data, device, announce, notes)
        else:
            baselines = shared_baselines(config, data, device, world, announce, notes)
        for t in [target, *baselines]:
            t.device = device  # a plugin's loader or a baseline given by the caller may have chosen another
            probe(t, data, device)
        session = AuditSession(config, pm, data=data, target=target, baselines=baselines, device=device, world=world)
        session.warnings = notes
        session.checks = checks
        pm.hook.auditkit_session_start(session=session)
        if checks:
            session.run(checks)
        else:
            session.exitstatus = ExitCode.NO_CHECKS_COLLECTED
        if previous is not None and not session.interrupted:
            # find_regressions reads only the results: the report itself is built once, in finish
            session.regressions = find_regressions(
                {"results": [r.to_json() for r in session.results]},
                previous, abs_tol=config.compare_abs_tolerance, rel_tol=config.compare_rel_tolerance
            )
            if session.regressions and session.exitstatus == ExitCode.OK:
                session.exitstatus = ExitCode.CHECKS_FAILED
        if world.is_main:
            session.finish()
    return session


def shared_baselines(
    config: Config, data: AuditData, device: torch.device, world: Any,
    announce: Callable[[str], None] | None = None, notes: list[str] | None = None,
) -> list[Any]:
    """The baselines of a sharded audit (:mod:`auditkit.distributed`): the same ones, with the
    same weights, on every process.

    Rank 0 loads them (:func:`load_baselines`: trained into its weights cache, or read from
    it) and tells the others which it kept, since it may have left one out, and which cache
    file (name and SHA-256) holds each training. A process whose cache lacks those bytes
    (another machine's disk, or a training of its own that came out otherwise) receives the
    file and writes it into its own cache; every process then loads the same baselines from
    its cache, as rank 0 did. Nothing is sent when the processes share a cache.

    :raises UsageError: rank 0 could not load the baselines (rank 0 raises its own error)."""
    import hashlib

    from auditkit.baselines import cache_dir

    failure: BaseException | None = None
    offer: list[tuple[str, tuple[str, str] | None]] = []
    loaded: list[Any] = []
    if world.is_main:
        try:
            loaded = load_baselines(config, data, device, announce, notes)
            for t in loaded:
                path = t.info.get("cache_path")
                entry = (Path(path).name, hashlib.sha256(Path(path).read_bytes()).hexdigest()) if path else None
                offer.append((t.name, entry))
        except BaseException as exc:  # noqa: BLE001 - said to the others, then raised
            failure = exc
    said = world.broadcast(("failed", f"{type(failure).__name__}: {failure}") if failure is not None else ("ok", offer))
    if failure is not None:
        raise failure
    kind, offer = said
    if kind == "failed":
        raise UsageError(f"rank 0 could not load the baselines ({offer})")

    def lacks(entry: tuple[str, str]) -> bool:
        path = cache_dir() / entry[0]
        return not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != entry[1]

    wanted = [] if world.is_main else [name for name, entry in offer if entry is not None and lacks(entry)]
    needed = sorted({name for asked in world.all_gather(wanted) for name in asked})
    if needed:  # one exchange, whatever the number of processes that want them
        files = world.broadcast({t.name: Path(t.info["cache_path"]).read_bytes() for t in loaded if t.name in needed})
        for name, entry in offer:
            if name in wanted and entry is not None:
                path = cache_dir() / entry[0]
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(files[name])
                os.replace(tmp, path)  # atomic, as load_baseline writes it
    if world.is_main:
        return loaded
    names = [name for name, _ in offer]
    mine = copy.copy(config)
    mine.baselines = names
    mine.baseline_weights = {k: v for k, v in config.baseline_weights.items() if k in names}
    return load_baselines(mine, data, device)


def audit(
    model: Any,
    data: AuditData | str = "synthetic:shapes",
    checks: Sequence[str] | None = None,
    *,
    settings: dict[str, dict[str, Any]] | None = None,
    plugins: Sequence[object] = (),
    verbose: int = -1,
    autoload: bool | None = None,
    **options: Any,
) -> AuditRun:
    """Audit ``model`` on ``data`` from Python and return the results.

    :param model: a model spec string (as ``--model``), an ``nn.Module`` (white box), a
        ``Target``/``BlackBoxTarget``, or any callable mapping images in [0,1] to scores.
    :param data: an ``AuditData`` or a data spec string (as ``--data``).
    :param checks: check ids or ``family.*`` patterns to run (default: all).
    :param options: any option of :data:`auditkit.options.OPTIONS` that the Python API takes,
        by its name (``--max-images`` is ``max_images``; ``help(auditkit.audit)`` lists them
        with their defaults); among them:
    :param baselines: classic baselines to audit beside the model (``"alexnet"``,
        ``"googlenet"``, ``"resnet18"``, ``"resnet50"``); none by default here (the command
        line defaults to the three classics). Trained once per data and cached.
    :param baseline_weights: state_dict checkpoints by baseline name, instead of training.
    :param baseline_steps: each baseline's training budget in optimizer steps (default
        :data:`auditkit.baselines.training.DEFAULT_STEPS`), or ``baseline_epochs`` passes over
        the train split instead (not both); ``baseline_seconds`` is only a safety cap on wall
        time, reported when it binds.
    :param baseline_init: ``"auto"`` (from scratch on generated data, fine-tuned from
        ImageNet-pretrained torchvision weights on yours), ``"scratch"`` or ``"pretrained"``.
    :param offline: never download pretrained weights (also ``AUDITKIT_OFFLINE=1``).
    :param weights_dir: a folder of pretrained torchvision checkpoints, searched before the
        torch hub cache (for ``?weights=`` specs and the baselines).
    :param settings: per-check settings and thresholds, as the config's per-check tables:
        ``{"accuracy.clean": {"thresholds": {"top1": {"min": 0.5}}}}``.
    :param plugins: plugins to register for this audit: modules or instances, or module names
        (strings) to import, as ``-p NAME`` does on the command line.
    :param json, junitxml, html, md: report paths (None: not written).
    :param compare: an earlier JSON report; regressed headline metrics fail the audit.
    :param verbose: -1 silent (default), 0 pytest-like lines, 1 verbose.
    :returns: an ``AuditRun``: ``run["accuracy.clean"].metrics["top1"]``, ``run.exit_code``,
        ``run.to_dataframe()``.
    :raises UsageError: bad model, data, settings or check names.
    :raises TypeError: a keyword argument that names no option.
    """
    from auditkit.plugin_manager import get_plugin_manager
    from auditkit.reporters.terminal import TerminalReporter

    config = Config(
        model=model if isinstance(model, str) else None,
        data=data if isinstance(data, str) else getattr(data, "spec", "python"),
        selected_checks=list(checks) if checks else None,
        verbosity=verbose,
        progress=False if verbose < 0 else None,
        check_settings=dict(settings or {}),
        **api_options(options),
    )
    pm = get_plugin_manager(autoload=autoload, extra=plugins)
    reporter = TerminalReporter(verbosity=verbose) if verbose >= 0 else None
    with preserved_random_state():  # the caller's own shuffles and draws go on as if no audit ran
        session = run_audit(
            config,
            pm,
            model=None if isinstance(model, str) else model,
            data=None if isinstance(data, str) else data,
            reporter=reporter,
        )
    return AuditRun(session, session.report or {})


#: The options :func:`audit` takes as keyword arguments (the rest are its own parameters).
API_OPTIONS = tuple(o for o in OPTIONS if o.python_api)


def api_options(given: dict[str, Any]) -> dict[str, Any]:
    """:func:`audit`'s option keyword arguments as config values: lists and tables copied (the
    caller's objects stay theirs), None or empty as the option's default."""
    out = {}
    for name, value in given.items():
        option = BY_NAME.get(name)
        if option is None or not option.python_api:
            known = [o.name for o in API_OPTIONS]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"audit() got an unexpected keyword argument {name!r}{hint}")
        if option.type in (list, dict):
            value = option.type(value) if value else option.initial()
        out[name] = value
    return out


def _audit_signature() -> inspect.Signature:
    """:func:`audit`'s signature with every option spelled out, for ``help()`` and editors."""
    own = inspect.signature(audit)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in API_OPTIONS]
    return own.replace(parameters=params)


audit.__signature__ = _audit_signature()  # type: ignore[attr-defined]
