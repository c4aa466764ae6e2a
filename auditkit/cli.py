"""The ``auditkit`` command: ``run``, ``demo`` and ``checks``; maps errors to exit codes."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from auditkit.config import DEFAULT_BASELINES, Config, find_config_file, parse_baselines, validate_file_table
from auditkit.errors import ExitCode, UsageError

DEFAULT_REPORT_DIR = Path("reports")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="PLUGIN",
                   help="load a plugin module, or disable one with no:NAME (repeatable)")


def build_parser(pm_for_options=None) -> argparse.ArgumentParser:
    import auditkit

    parser = argparse.ArgumentParser(
        prog="auditkit",
        description="pytest-style robustness and interpretability audits for PyTorch image classifiers",
    )
    parser.add_argument("--version", action="version", version=f"auditkit {auditkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,demo,checks,report}")

    run = sub.add_parser("run", help="audit a model", description="Audit a model on a dataset and write reports.")
    run.add_argument("--model", help="torchvision:NAME, file.py:factory, module:factory, a .pt2 or TorchScript file")
    run.add_argument("--weights", help="state_dict for the model (loaded with weights_only=True)")
    run.add_argument("--weights-dir", dest="weights_dir", metavar="DIR",
                     help="a folder of pretrained torchvision checkpoints, searched before the torch hub cache "
                     "(for ?weights= models and the baselines)")
    run.add_argument("--data", help="synthetic:shapes[?n=..&size=..], an ImageFolder dir, a COCO JSON, file.py:factory")
    run.add_argument("--checks", help="comma-separated check ids or family.* patterns")
    run.add_argument("-k", dest="keyword", metavar="EXPR", help="select checks whose id matches EXPR (and/or/not)")
    run.add_argument("--baselines", help="comma-separated classic baselines to audit beside the model "
                     "(default alexnet,googlenet,resnet18; resnet50 available) or none")
    run.add_argument("--baseline-weights", action="append", default=[], metavar="NAME=PATH",
                     help="a state_dict checkpoint for a baseline instead of training it (repeatable)")
    run.add_argument("--baseline-steps", type=int, dest="baseline_steps", metavar="N",
                     help="training budget per baseline in optimizer steps (default 1500); the same budget gives "
                     "the same baseline on any machine")
    run.add_argument("--baseline-epochs", type=int, metavar="N",
                     help="the budget as N passes over the train split's size instead of --baseline-steps")
    run.add_argument("--baseline-seconds", type=float, metavar="S",
                     help="safety cap on each baseline's training time (default 600); when it binds, the report "
                     "says so and the result depends on the machine's speed")
    run.add_argument("--baseline-init", choices=("auto", "scratch", "pretrained"), dest="baseline_init",
                     help="how trained baselines start: from scratch, or fine-tuned from torchvision's ImageNet "
                     "weights (default auto: scratch on generated data, pretrained on any other)")
    run.add_argument("--offline", action="store_true", default=None,
                     help="never download (pretrained weights must be in --weights-dir or the torch hub cache); "
                     "also AUDITKIT_OFFLINE=1 or offline = true")
    run.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N]")
    run.add_argument("--seed", type=int)
    run.add_argument("--max-images", type=int, dest="max_images", help="audit at most N evaluation images")
    run.add_argument("--batch-size", type=int, dest="batch_size")
    run.add_argument("--config", help="a TOML file with an auditkit table (default: ./auditkit.toml or ./pyproject.toml)")
    run.add_argument("--json", help=f"write the JSON report here (default {DEFAULT_REPORT_DIR}/report.json)")
    run.add_argument("--junitxml", help="write JUnit XML here")
    run.add_argument("--html", help="write the HTML scorecard here")
    run.add_argument("--md", help="write a short Markdown summary here (for a pull-request comment)")
    run.add_argument("--compare", metavar="PREVIOUS.json",
                     help="fail when a headline metric regressed against this earlier report")
    run.add_argument("--trust-pickle", action="store_true", default=None, dest="trust_pickle",
                     help="allow loading a fully pickled model (runs code from the file)")
    run.add_argument("--no-progress", action="store_false", dest="progress", default=None, help="hide progress bars")
    verbosity = run.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="count", default=0)
    verbosity.add_argument("-v", "--verbose", action="count", default=0)
    _add_common(run)
    if pm_for_options is not None:
        pm_for_options.hook.auditkit_addoption(parser=run)

    demo = sub.add_parser("demo", help="run the embedded demo audit", description="Run the embedded demo audit.")
    demo.add_argument("--out", default=str(DEFAULT_REPORT_DIR / "demo"), help="output folder (default reports/demo)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("-q", "--quiet", action="count", default=0)
    _add_common(demo)

    checks = sub.add_parser("checks", help="list every registered check", description="List registered checks.")
    _add_common(checks)

    report = sub.add_parser(
        "report", help="rebuild the HTML scorecard from a JSON report",
        description="Rebuild the HTML scorecard from a JSON report alone (results, artifacts and configuration "
        "are in the JSON): render an audit that ran elsewhere, e.g. in another CI job.",
    )
    report.add_argument("json_report", metavar="REPORT.json")
    report.add_argument("--html", help="where to write the scorecard (default: REPORT.html beside the JSON)")
    _add_common(report)
    return parser


def _preparse_plugins(argv: Sequence[str]) -> list[str]:
    plugins = []
    it = iter(argv)
    for arg in it:
        if arg == "-p":
            plugins.append(next(it, ""))
        elif arg.startswith("-p") and len(arg) > 2:
            plugins.append(arg[2:])
    return plugins


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> Config:
    rootdir = Path.cwd()
    source, table = find_config_file(rootdir, args.config)
    values = validate_file_table(table, str(source)) if source else {}
    config = Config(source=str(source) if source else None, rootdir=str(rootdir), invocation=["auditkit", *argv])
    for key, value in values.items():
        setattr(config, key, value)
    cli = {
        "model": args.model,
        "weights": args.weights,
        "weights_dir": args.weights_dir,
        "data": args.data,
        "keyword": args.keyword,
        "device": args.device,
        "seed": args.seed,
        "max_images": args.max_images,
        "batch_size": args.batch_size,
        "json": args.json,
        "junitxml": args.junitxml,
        "html": args.html,
        "md": args.md,
        "compare": args.compare,
        "trust_pickle": args.trust_pickle,
        "progress": args.progress,
    }
    for key, value in cli.items():
        if value is not None:
            setattr(config, key, value)
    if args.checks:
        config.select = [c.strip() for c in args.checks.split(",") if c.strip()]
    if args.baselines is not None:
        config.baselines = parse_baselines(args.baselines)
    elif "baselines" not in values:
        config.baselines = list(DEFAULT_BASELINES)
    for item in args.baseline_weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--baseline-weights {item!r}: expected NAME=PATH, e.g. resnet18=resnet18.pt")
        config.baseline_weights[name] = path
    # The command line's budget replaces the config file's, whichever unit either uses.
    if args.baseline_steps is not None and args.baseline_epochs is not None:
        raise UsageError("--baseline-steps and --baseline-epochs both set the training budget; give one")
    if args.baseline_steps is not None:
        config.baseline_steps, config.baseline_epochs = args.baseline_steps, None
    if args.baseline_epochs is not None:
        config.baseline_steps, config.baseline_epochs = None, args.baseline_epochs
    if args.baseline_seconds is not None:
        config.baseline_seconds = args.baseline_seconds
    if args.baseline_init is not None:
        config.baseline_init = args.baseline_init
    if args.offline:
        config.offline = True
    config.plugins = list(config.plugins) + list(args.plugins)
    config.verbosity = args.verbose - args.quiet
    if config.json is None:
        config.json = str(DEFAULT_REPORT_DIR / "report.json")
    if config.max_images is not None and config.max_images < 1:
        raise UsageError(f"--max-images must be at least 1, got {config.max_images}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    config.options = args
    return config


def cmd_run(argv: Sequence[str]) -> int:
    from auditkit.main import run_audit
    from auditkit.plugin_manager import get_plugin_manager
    from auditkit.reporters.terminal import TerminalReporter

    pm = get_plugin_manager(_preparse_plugins(argv), confdir=Path.cwd())
    args = build_parser(pm).parse_args(["run", *argv])
    config = config_from_args(args, ["run", *argv])
    if config.plugins != args.plugins:  # plugins named in the config file
        pm = get_plugin_manager(config.plugins, confdir=Path.cwd())
    reporter = TerminalReporter(verbosity=config.verbosity)
    session = run_audit(config, pm, reporter=reporter)
    return session.exitstatus


def cmd_checks(argv: Sequence[str]) -> int:
    from auditkit.config import Config
    from auditkit.plugin_manager import get_plugin_manager

    args = build_parser().parse_args(["checks", *argv])
    pm = get_plugin_manager(args.plugins, confdir=Path.cwd())
    config = Config()
    from auditkit.main import registered_checks

    rows = []
    for cls, plugin in registered_checks(config, pm):
        origin = pm.origins.get(plugin, "")
        rows.append((cls.id, f"{plugin} ({origin})" if origin else plugin, ", ".join(cls.requires) or "-", cls.summary()))
    if not rows:
        print("no checks registered (is AUDITKIT_DISABLE_PLUGIN_AUTOLOAD set?)")
        return ExitCode.NO_CHECKS_COLLECTED
    rows.sort()
    widths = [max(len(r[i]) for r in rows + [("check", "plugin", "requires", "")]) for i in range(3)]
    print(f"{'check':<{widths[0]}}  {'plugin':<{widths[1]}}  {'requires':<{widths[2]}}  description")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return ExitCode.OK


def cmd_report(argv: Sequence[str]) -> int:
    """``auditkit report REPORT.json``: the scorecard from a JSON report alone.

    A report is data, perhaps from another machine: it is validated against the shipped
    schema first, and nothing it names is imported. Plugins whose scorecard sections it
    needs are loaded only when the user names them with ``-p`` (installed plugins load as
    in any run)."""
    from auditkit.compare import load_report
    from auditkit.outputs import check_writable
    from auditkit.plugin_manager import get_plugin_manager
    from auditkit.reporters.html import scorecard_from_report, write_scorecard

    args = build_parser().parse_args(["report", *argv])
    source = Path(args.json_report)
    if args.html:
        out = Path(args.html)
        if out.exists() and source.exists() and out.resolve() == source.resolve():
            raise UsageError(f"--html {out}: is the report being read; expected another path for the scorecard")
    else:
        out = source.with_suffix(".html")
        if out.resolve() == source.resolve():  # REPORT.html holding JSON: never write over the input
            out = source.with_suffix(".scorecard.html")
    report = load_report(source, what="auditkit report")
    check_writable(out, "--html")
    pm = get_plugin_manager(args.plugins, confdir=Path.cwd())
    named = [p for p in report.get("config", {}).get("plugins", []) if not p.startswith("no:")]
    unloaded = [p for p in named if p not in args.plugins]
    if unloaded:
        print(f"auditkit report: the audit ran with plugin(s) {', '.join(unloaded)}; a report never loads code, "
              f"so pass -p {' -p '.join(unloaded)} for their scorecard sections (their checks get the generic one)")
    path = write_scorecard(scorecard_from_report(report, pm), out)
    print(f"HTML scorecard: {path}")
    return ExitCode.OK


def cmd_demo(argv: Sequence[str]) -> int:
    from auditkit.demo import run_demo

    args = build_parser().parse_args(["demo", *argv])
    return run_demo(out=Path(args.out), device=args.device, plugins=args.plugins, verbosity=-args.quiet)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (what a CI cancellation or ``kill`` sends) as Ctrl-C while the command
    runs: the audit stops at the next Python instruction, writes the results gathered so far
    and exits 2. The previous handler is put back afterwards."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread (e.g. embedded): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with _sigterm_as_interrupt():
            return _main(argv)
    except KeyboardInterrupt:  # outside the command's own handling (e.g. while importing)
        print("auditkit: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("default", UserWarning)
    commands = {"run": cmd_run, "checks": cmd_checks, "demo": cmd_demo, "report": cmd_report}
    if not argv or argv[0] not in commands:
        parser = build_parser()
        if not argv or argv[0] in ("-h", "--help", "--version"):
            try:
                parser.parse_args(argv or ["--help"])
            except SystemExit as exc:
                return int(exc.code or 0)
        parser.print_usage(sys.stderr)
        print(f"auditkit: error: unknown command {argv[0]!r}; expected one of: run, demo, checks, report", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    try:
        return commands[argv[0]](argv[1:])
    except UsageError as exc:
        print(f"auditkit: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE_ERROR
    except SystemExit as exc:  # argparse: bad option
        return ExitCode.USAGE_ERROR if exc.code not in (0, None) else ExitCode.OK
    except KeyboardInterrupt:
        print("auditkit: interrupted before any check ran", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception:
        traceback.print_exc()
        print("auditkit: internal error (a bug in auditkit or a plugin); please report it with the traceback above",
              file=sys.stderr)
        return ExitCode.INTERNAL_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
