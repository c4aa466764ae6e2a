"""The hook specifications: every point where a plugin can change what auditkit does.

Implement a hook by defining a function with the same name, decorated with
``auditkit.hookimpl``, in a module registered as a plugin (an ``auditkit`` entry point,
``-p module`` on the command line, or an ``auditconf.py`` in the working directory).
Implementations run in reverse registration order; for ``firstresult`` hooks the first
non-None result wins and the rest are not called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditkit.markers import hookspec

if TYPE_CHECKING:
    import argparse

    from auditkit.check import Check, CheckResult, Findings
    from auditkit.config import Config
    from auditkit.data.base import AuditData
    from auditkit.context import AuditContext
    from auditkit.session import AuditSession

# -------------------------------------------------------------------------------------------
# setup
# -------------------------------------------------------------------------------------------


@hookspec(historic=True)
def auditkit_addoption(parser: "argparse.ArgumentParser") -> None:
    """Add command-line options to ``auditkit run``.

    Called once, while the command line is being built, before it is parsed. Use
    ``parser.add_argument_group("my plugin")`` to keep the help readable. The parsed values
    reach plugins through ``config.options`` in :func:`auditkit_configure`.

    historic: a plugin registered after the call is called with the same parser when it
    registers (as pytest's ``pytest_addoption``).

    :param parser: the ``argparse`` parser of the ``run`` subcommand.
    """


@hookspec(historic=True)
def auditkit_configure(config: "Config") -> None:
    """Called once after the command line and config file are parsed, before any model or
    data is loaded. Validate your own options here (raise ``auditkit.UsageError`` for bad
    input, which exits 4) or register further plugins through ``config.pluginmanager``.

    historic: a plugin registered later in the audit (for example by another plugin's
    ``auditkit_configure``) is called with the same config when it registers, so every
    plugin is configured whenever it arrives. Implementations cannot be wrappers.

    :param config: the effective configuration of this audit.
    """


# -------------------------------------------------------------------------------------------
# loading
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def auditkit_load_model(spec: str, options: Any, config: "Config") -> Any:
    """Load the model named by ``spec`` (the ``--model`` value).

    Called once for the target (and once per baseline given as a spec). Return a
    ``auditkit.Target`` (white box) or ``auditkit.BlackBoxTarget``, not yet entered, or
    None to let another plugin try. Implement it to support a new model format. Plugins
    answer first; the built-in formats (``auditkit.models``: torchvision names, factories,
    torch files, ONNX files, HTTP endpoints, each a ``trylast`` implementation) answer
    after them, so a plugin can take over any spec. When nobody answers, auditkit raises
    ``UsageError`` naming the accepted spec forms: never return a placeholder.

    :param spec: the model spec string.
    :param options: ``auditkit.toolkit.ModelOptions`` (weights path, number of classes
        from the data, ``trust_pickle``, ``device`` as a ``torch.device``, normalization
        override, offline mode, seed).
    :param config: the effective configuration.
    :returns: the loaded target, or None. firstresult: the first non-None result wins.
    """


@hookspec(firstresult=True)
def auditkit_load_data(spec: str, config: "Config") -> "AuditData | None":
    """Load the dataset named by ``spec`` (the ``--data`` value).

    Called once per audit, before the models are loaded (the data decides the number of
    classes and the input size). Return an ``auditkit.AuditData`` or None to let another
    plugin try. Plugins answer first; the built-in formats (``auditkit.data``: synthetic
    shapes, image folders, COCO JSON, torchvision datasets, factories, each ``trylast``)
    answer after them. When nobody answers, auditkit raises ``UsageError`` naming the
    accepted spec forms.

    :returns: the data, or None. firstresult: the first non-None result wins.
    """


# -------------------------------------------------------------------------------------------
# collection
# -------------------------------------------------------------------------------------------


@hookspec
def auditkit_collect_checks(config: "Config") -> "list[type[Check]] | None":
    """Return the check classes this plugin provides.

    Called once per audit (and by ``auditkit checks``). Every plugin's list is gathered;
    two checks with the same id are an error. Return classes, not instances: the session
    instantiates them with settings from the config.

    :returns: a list of ``auditkit.Check`` subclasses (or None for none).
    """


@hookspec
def auditkit_modify_checks(config: "Config", checks: "list[Check]") -> None:
    """Reorder or deselect the collected checks, in place.

    Called once after collection and after ``--checks``/``-k`` selection. Remove items from
    ``checks`` to deselect them; reorder the list to change the run order. The built-in
    selection is itself an implementation of this hook.

    :param checks: the check instances that will run, in run order.
    """


# -------------------------------------------------------------------------------------------
# running
# -------------------------------------------------------------------------------------------


@hookspec
def auditkit_session_start(session: "AuditSession") -> None:
    """Called once per audit when everything is loaded and the checks are collected, right
    before the first check runs (also when no check was collected). The terminal reporter
    prints its header here: platform, device, plugins, data, models, checks collected.

    :param session: the session about to run: ``session.config``, ``session.data``,
        ``session.target``, ``session.baselines``, ``session.checks``, ``session.device``.
    """


@hookspec(firstresult=True)
def auditkit_run_check(check: "Check", ctx: "AuditContext") -> "Findings | None":
    """Run one check on one model and return its findings.

    Called once per check and model, inside a guard: an exception raised here becomes an
    ``error`` result with its traceback, and ``auditkit.skip()``/``auditkit.xfail()`` end
    the check as skipped/xfailed. The built-in implementation (``trylast``) calls
    ``check.run(ctx)``; implement this hook to wrap or replace how checks run (profiling,
    remote execution).

    :param check: the check instance (with its settings).
    :param ctx: what the check may use: the target, the data, the shared clean forward
        pass, the device, seeded random generators, progress bars.
    :returns: ``auditkit.Findings``. firstresult: the first non-None result wins.
    """


@hookspec(firstresult=True)
def auditkit_make_result(
    check: "Check", ctx: "AuditContext", findings: "Findings | None", excinfo: "BaseException | None", duration_s: float
) -> "CheckResult | None":
    """Turn a check's findings (or the exception it raised) into a frozen ``CheckResult``.

    Called once per check and model, right after :func:`auditkit_run_check`. The built-in
    implementation (``trylast``) chooses the outcome, first rule that applies: skipped as
    "insufficient evidence" when the model predicts one class for every image and the check
    is ``constant_sensitive``, or when the sample (``sample_metric``) is below the check's
    ``min_sample``; failed on the check's own failures or a threshold broken by a real number;
    skipped when a headline or threshold metric could not be computed (NaN or missing);
    else passed. Implement it to post-process results (for example to mark known failures
    as xfailed).

    :param findings: what the check returned, or None when it raised.
    :param excinfo: the exception raised (``Skipped``, ``XFailed`` or a crash), or None.
    :param duration_s: wall time of the run, in seconds.
    :returns: the result. firstresult: the first non-None result wins.
    """


@hookspec
def auditkit_log_result(result: "CheckResult") -> None:
    """Called with every result as soon as it exists: the terminal reporter prints its line
    here. Must not raise (a raising implementation stops the other implementations)."""


# -------------------------------------------------------------------------------------------
# reporting
# -------------------------------------------------------------------------------------------


@hookspec
def auditkit_session_finish(session: "AuditSession", exitstatus: int) -> None:
    """Called once after every check has run on every model, or after an interruption with
    the results gathered so far. Reporters write their files here (JSON, JUnit XML, HTML)
    and the terminal reporter prints its summary.

    :param session: the finished session (``session.results``, ``session.models``,
        ``session.config``, ``session.duration_s``).
    :param exitstatus: the exit code the audit will end with.
    """


@hookspec
def auditkit_scorecard_sections(results: "list[CheckResult]", config: "Config") -> "list[dict] | None":
    """Contribute sections to the HTML scorecard.

    Called once while the scorecard is rendered, with every result (target and baselines).
    Return a list of sections, each a dict ``{"id": str, "title": str, "html": str,
    "order": int}`` and optionally ``"checks": [check ids]``: the checks the section covers
    (default: the family named by ``id``, e.g. ``"gradcam"`` covers ``gradcam.*``); checks no
    section covers get a generic section. ``html`` is inserted as is (build it from escaped values: the
    scorecard must stay self-contained, so embed images as data URIs and plots as inline
    SVG, never reference external files). Must never touch a model: results only.

    :returns: a list of section dicts, or None.
    """
