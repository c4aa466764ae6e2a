"""The plugin host: discovery (entry points, -p, auditconf.py), disabling, loud failures,
and the meta-tests that keep the hook surface honest (documented, exercised)."""
from __future__ import annotations

import inspect
import sys
import textwrap

import pytest

from auditkit import hookspecs
from auditkit.cli import main
from auditkit.config import Config
from auditkit.main import registered_checks
from auditkit.errors import UsageError
from auditkit.plugin_manager import PluginError, get_plugin_manager, hookimpl

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("auditkit_")]


def _check_ids(pm):
    return [cls.id for cls, _ in registered_checks(Config(), pm)]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_fully_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 120, f"{hook} needs a docstring saying when it is called, its arguments and return"
    assert "alled" in doc  # "Called ..." / "called": when it runs


def test_the_contract_hooks_exist():
    expected = {
        "auditkit_addoption", "auditkit_configure", "auditkit_load_model", "auditkit_load_data",
        "auditkit_collect_checks", "auditkit_modify_checks", "auditkit_run_check", "auditkit_make_result",
        "auditkit_log_result", "auditkit_session_start", "auditkit_session_finish", "auditkit_scorecard_sections",
    }
    assert expected <= set(HOOKS)


def test_builtin_checks_come_from_entry_points_and_can_be_disabled(monkeypatch):
    assert "accuracy.clean" in _check_ids(get_plugin_manager())
    assert "accuracy.clean" not in _check_ids(get_plugin_manager(["no:accuracy"]))
    monkeypatch.setenv("AUDITKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert _check_ids(get_plugin_manager()) == []
    assert "accuracy.clean" in _check_ids(get_plugin_manager(["auditkit_accuracy"]))


def _write_module(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_misspelled_hook_fails_loudly_with_a_suggestion(tmp_path, monkeypatch):
    _write_module(tmp_path, "typo_plugin", """
        import auditkit

        @auditkit.hookimpl
        def auditkit_colect_checks(config):
            return []
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="did you mean 'auditkit_collect_checks'"):
        get_plugin_manager(["typo_plugin"])
    sys.modules.pop("typo_plugin", None)


def test_wrong_hook_arguments_fail_loudly(tmp_path, monkeypatch):
    _write_module(tmp_path, "badargs_plugin", """
        import auditkit

        @auditkit.hookimpl
        def auditkit_collect_checks(config, nonsense):
            return []
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="badargs_plugin"):
        get_plugin_manager(["badargs_plugin"])
    sys.modules.pop("badargs_plugin", None)


def test_p_option_and_auditconf_register_plugins(tmp_path, monkeypatch):
    _write_module(tmp_path, "extra_checks", """
        import auditkit

        class Extra(auditkit.Check):
            id = "extra.one"
            def run(self, ctx):
                return auditkit.Findings(metrics={"one": 1.0})

        @auditkit.hookimpl
        def auditkit_collect_checks(config):
            return [Extra]
    """)
    conf = tmp_path / "proj"
    conf.mkdir()
    _write_module(conf, "auditconf", """
        import auditkit

        class Local(auditkit.Check):
            id = "local.two"
            def run(self, ctx):
                return auditkit.Findings(metrics={"two": 2.0})

        @auditkit.hookimpl
        def auditkit_collect_checks(config):
            return [Local]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = get_plugin_manager(["extra_checks"], confdir=conf)
    ids = _check_ids(pm)
    assert "extra.one" in ids and "local.two" in ids
    assert pm.origins["auditconf"].endswith("auditconf.py")
    assert "local.two" not in _check_ids(get_plugin_manager(["no:auditconf"], confdir=conf))
    sys.modules.pop("extra_checks", None)
    sys.modules.pop("auditconf", None)


def test_a_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="cannot import plugin module"):
        get_plugin_manager(["no_such_plugin_module_xyz"])


def test_a_plugin_module_that_breaks_on_import_is_a_plugin_error_not_a_crash(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin_xyz.py").write_text("def oops(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"-p broken_plugin_xyz: the plugin module failed to import: SyntaxError"):
        get_plugin_manager(["broken_plugin_xyz"])
    sys.modules.pop("broken_plugin_xyz", None)


def test_the_python_apis_plugins_take_module_names_as_p_does(tmp_path, monkeypatch):
    _write_module(tmp_path, "named_checks_xyz", """
        import auditkit

        class Named(auditkit.Check):
            id = "named.one"
            def run(self, ctx):
                return auditkit.Findings(metrics={"one": 1.0})

        @auditkit.hookimpl
        def auditkit_collect_checks(config):
            return [Named]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "named.one" in _check_ids(get_plugin_manager(extra=["named_checks_xyz"]))
    with pytest.raises(PluginError, match=r"plugins=\['no_such_module_xyz'\]: cannot import plugin module"):
        get_plugin_manager(extra=["no_such_module_xyz"])
    sys.modules.pop("named_checks_xyz", None)


def test_duplicate_check_ids_are_an_error(tmp_path, monkeypatch):
    _write_module(tmp_path, "dup_plugin", """
        import auditkit

        class Dup(auditkit.Check):
            id = "accuracy.clean"
            def run(self, ctx):
                return auditkit.Findings()

        @auditkit.hookimpl
        def auditkit_collect_checks(config):
            return [Dup]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Exception, match="registered twice"):
        _check_ids(get_plugin_manager(["dup_plugin"]))
    sys.modules.pop("dup_plugin", None)


def test_every_hook_is_called_in_a_real_run(tmp_path, monkeypatch, capsys):
    """A plugin implementing every hook, run through the command line: each one fires."""
    _write_module(tmp_path, "all_hooks_plugin", """
        import auditkit

        CALLED = set()

        class Probe(auditkit.Check):
            id = "probe.all_hooks"
            def run(self, ctx):
                return auditkit.Findings(metrics={"x": 1.0})

        @auditkit.hookimpl
        def auditkit_addoption(parser):
            CALLED.add("auditkit_addoption")
            parser.add_argument("--probe-flag", default="off")

        @auditkit.hookimpl
        def auditkit_configure(config):
            CALLED.add("auditkit_configure")
            assert config.options.probe_flag == "on"

        @auditkit.hookimpl(tryfirst=True)
        def auditkit_load_model(spec, options, config):
            CALLED.add("auditkit_load_model")
            if spec == "probe:model":
                from auditkit.testing.models import TinyGAPNet
                return auditkit.Target(TinyGAPNet(num_classes=options.num_classes), spec=spec)

        @auditkit.hookimpl(tryfirst=True)
        def auditkit_load_data(spec, config):
            CALLED.add("auditkit_load_data")

        @auditkit.hookimpl
        def auditkit_collect_checks(config):
            CALLED.add("auditkit_collect_checks")
            return [Probe]

        @auditkit.hookimpl
        def auditkit_modify_checks(config, checks):
            CALLED.add("auditkit_modify_checks")

        @auditkit.hookimpl(hookwrapper=True)
        def auditkit_run_check(check, ctx):
            CALLED.add("auditkit_run_check")
            yield

        @auditkit.hookimpl(hookwrapper=True)
        def auditkit_make_result(check, ctx, findings, excinfo, duration_s):
            CALLED.add("auditkit_make_result")
            yield

        @auditkit.hookimpl
        def auditkit_log_result(result):
            CALLED.add("auditkit_log_result")

        @auditkit.hookimpl
        def auditkit_session_start(session):
            CALLED.add("auditkit_session_start")
            assert [c.id for c in session.checks] == ["probe.all_hooks"] and not session.results

        @auditkit.hookimpl
        def auditkit_session_finish(session, exitstatus):
            CALLED.add("auditkit_session_finish")
            session.hook.auditkit_scorecard_sections(results=session.results, config=session.config)

        @auditkit.hookimpl
        def auditkit_scorecard_sections(results, config):
            CALLED.add("auditkit_scorecard_sections")
            return [{"id": "probe", "title": "Probe", "html": "<p>probe</p>", "order": 0}]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--baselines", "none", "-p", "all_hooks_plugin", "--model", "probe:model", "--data", "synthetic:shapes?n=4&size=32",
                 "--probe-flag", "on", "--checks", "probe.*", "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr()
    import all_hooks_plugin

    assert all_hooks_plugin.CALLED == set(HOOKS)
    sys.modules.pop("all_hooks_plugin", None)


def test_a_p_plugin_in_the_working_directory_is_found_without_pythonpath(tmp_path, monkeypatch, capsys):
    """As with pytest: `-p myplug` finds ./myplug.py, and the plugins line names it plainly."""
    from auditkit.cli import main

    (tmp_path / "myplug_wd.py").write_text(
        "from auditkit.markers import hookimpl\n"
        "@hookimpl\n"
        "def auditkit_configure(config):\n"
        "    config.myplug_seen = True\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))  # keep sys.path restored afterwards
    code = main(["run", "--baselines", "none", "--checks", "accuracy.clean", "-p", "myplug_wd",
                 "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=4&size=32",
                 "--json", "r.json"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "plugins: " in out and "myplug_wd (-p)" in out and "myplug_wd--p" not in out
    assert str(tmp_path) not in sys.path  # only while importing the plugin


def test_a_check_id_that_is_not_family_dot_name_is_refused():
    from auditkit.check import Check
    from auditkit.config import Config
    from auditkit.main import registered_checks

    class Bad(Check):
        id = "Foo check"

        def run(self, ctx):  # pragma: no cover - never runs
            return None

    class Plugin:
        @hookimpl
        def auditkit_collect_checks(self):
            return [Bad]

    pm = get_plugin_manager(autoload=False, extra=[Plugin()])
    with pytest.raises(UsageError, match=r"check id 'Foo check' is not valid; expected 'family.name'"):
        registered_checks(Config(), pm)


def test_setup_hooks_are_historic_so_a_plugin_registered_later_is_configured_too(tmp_path, monkeypatch, capsys):
    """As pytest's pytest_addoption/pytest_configure: a plugin that another plugin registers
    from its auditkit_configure still gets auditkit_configure (and auditkit_addoption)."""
    _write_module(tmp_path, "late_registrar", """
        import auditkit

        SEEN = []

        class Late:
            @auditkit.hookimpl
            def auditkit_addoption(self, parser):
                SEEN.append(("addoption", parser.prog))

            @auditkit.hookimpl
            def auditkit_configure(self, config):
                SEEN.append(("configure", config.seed))

        @auditkit.hookimpl
        def auditkit_configure(config):
            config.pluginmanager.register(Late(), name="late")
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--baselines", "none", "-p", "late_registrar", "--checks", "accuracy.clean", "--seed", "7",
                 "--model", "auditkit.testing.models:tiny_factory", "--data", "synthetic:shapes?n=4&size=32",
                 "--json", "r.json", "-q"])
    assert code in (0, 1), capsys.readouterr()
    import late_registrar

    assert late_registrar.SEEN == [("addoption", "auditkit run"), ("configure", 7)]
    sys.modules.pop("late_registrar", None)


def test_the_terminal_header_comes_through_the_session_start_hook():
    from auditkit.reporters.terminal import TerminalReporter

    impl = getattr(TerminalReporter, "auditkit_session_start")
    assert hasattr(impl, "auditkit_impl")  # a hookimpl, reached through pm.hook like any plugin's
    assert not hasattr(TerminalReporter, "session_start")
