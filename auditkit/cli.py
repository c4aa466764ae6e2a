"""The ``auditkit`` command: ``run``, ``demo`` and ``checks``; maps errors to exit codes."""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Iterator, Sequence

from auditkit.config import Config, find_config_file, validate_file_table
from auditkit.errors import ExitCode, UsageError
from auditkit.options import BY_NAME, DEFAULT_REPORT_DIR, OPTIONS, command_line_options


def _add_common(p: argparse.ArgumentParser) -> None:
    BY_NAME["plugins"].add_to(p)


def build_parser(pm_for_options=None) -> argparse.ArgumentParser:
    """The ``auditkit`` parser; ``run``'s options come from :data:`auditkit.options.OPTIONS`
    and from the plugins of ``pm_for_options`` (``auditkit_addoption``, called historic so a
    plugin registered later still adds its options to this parser)."""
    import auditkit

    parser = argparse.ArgumentParser(
        prog="auditkit",
        description="pytest-style robustness and interpretability audits for PyTorch image classifiers",
    )
    parser.add_argument("--version", action="version", version=f"auditkit {auditkit.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,demo,checks,report}")

    run = sub.add_parser("run", help="audit a model", description="Audit a model on a dataset and write reports.")
    for option in command_line_options():
        option.add_to(run)
    run.add_argument("--config", help="a TOML file with an auditkit table (default: ./auditkit.toml or ./pyproject.toml)")
    verbosity = run.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="count", default=0)
    verbosity.add_argument("-v", "--verbose", action="count", default=0)
    _add_common(run)
    if pm_for_options is not None:
        pm_for_options.hook.auditkit_addoption.call_historic(kwargs=dict(parser=run))

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
    """The effective configuration of ``auditkit run``: each option from the command line,
    else the config file, else the command line's default (:data:`auditkit.options.OPTIONS`);
    options that collect (``-p``, ``--baseline-weights``) add the command line's to the file's."""
    rootdir = Path.cwd()
    source, table = find_config_file(rootdir, args.config)
    from_file = validate_file_table(table, str(source)) if source else {}
    config = Config(**from_file, source=str(source) if source else None, rootdir=str(rootdir),
                    invocation=["auditkit", *argv])
    for option in OPTIONS:
        if option.flags and option.given(args):
            value = option.from_command_line(args)
            if option.extend:
                current = getattr(config, option.name)
                value = {**current, **value} if isinstance(value, dict) else [*current, *value]
            setattr(config, option.name, value)
        elif option.command_default is not None and option.file_key not in from_file:
            setattr(config, option.name, copy.copy(option.command_default))
    # The command line's budget replaces the config file's, whichever unit either uses.
    if args.baseline_steps is not None and args.baseline_epochs is not None:
        raise UsageError("--baseline-steps and --baseline-epochs both set the training budget; give one")
    if args.baseline_steps is not None:
        config.baseline_epochs = None
    if args.baseline_epochs is not None:
        config.baseline_steps = None
    config.verbosity = args.verbose - args.quiet
    for option in OPTIONS:
        value = getattr(config, option.name)
        if option.minimum is not None and value is not None and value < option.minimum:
            raise UsageError(f"{option.flag} must be at least {option.minimum}, got {value}")
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
    # Before anything imports torch: OpenMP reads its wait policy once, at load.
    from auditkit.threads import prefer_passive_waiting

    prefer_passive_waiting()
    try:
        with _sigterm_as_interrupt():
            code = _main(argv)
    except KeyboardInterrupt:  # outside the command's own handling (e.g. while importing)
        print("auditkit: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    if _other_rank() and code in (ExitCode.OK, ExitCode.CHECKS_FAILED, ExitCode.USAGE_ERROR, ExitCode.NO_CHECKS_COLLECTED):
        # Rank 0 says the audit's verdict (and any usage error) for every process of a torchrun
        # job: a second process exiting non-zero first would make torchrun stop rank 0, maybe
        # before its reports are written, and blame the wrong process.
        return ExitCode.OK
    return code


def _other_rank() -> bool:
    """Whether this is a process of a torchrun job other than rank 0 (auditkit.distributed)."""
    from auditkit.distributed import other_rank

    return other_rank()


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
        if not _other_rank():  # said once, by rank 0, in a torchrun job
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
