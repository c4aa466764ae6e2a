"""Config files: discovery, per-check settings and thresholds, clear errors for bad keys and types."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from auditkit import Check, Threshold
from auditkit.config import configure_check, find_config_file, validate_file_table
from auditkit.errors import UsageError


class Configurable(Check):
    id = "test.configurable"
    thresholds = (Threshold("score", "min", 0.5),)

    @dataclass
    class Settings:
        steps: int = 10
        epsilons: tuple[float, ...] = (0.1, 0.2)
        layer: str | None = None
        targeted: bool = False


def test_pyproject_and_auditkit_toml_discovery(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.auditkit]\nseed = 3\n')
    path, table = find_config_file(tmp_path)
    assert path.name == "pyproject.toml" and table == {"seed": 3}
    (tmp_path / "auditkit.toml").write_text("seed = 5\n")
    path, table = find_config_file(tmp_path)
    assert path.name == "auditkit.toml" and table == {"seed": 5}


def test_pyproject_without_an_auditkit_table_is_ignored(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_config_file(tmp_path) == (None, {})


def test_unknown_top_level_key_is_an_error_with_a_suggestion():
    with pytest.raises(UsageError, match=r"unknown key 'sede' .*did you mean 'seed'"):
        validate_file_table({"sede": 1}, "pyproject.toml")


def test_wrong_top_level_type_is_an_error():
    with pytest.raises(UsageError, match="seed must be int, got str"):
        validate_file_table({"seed": "3"}, "pyproject.toml")
    with pytest.raises(UsageError, match="seed must be int, got bool"):
        validate_file_table({"seed": True}, "pyproject.toml")


def test_baselines_accept_a_list_or_a_comma_string():
    assert validate_file_table({"baselines": "alexnet, resnet18"}, "x")["baselines"] == ["alexnet", "resnet18"]
    assert validate_file_table({"baselines": "none"}, "x")["baselines"] == []


def test_check_settings_are_typed_and_coerced():
    check = configure_check(Configurable, {"steps": 3, "epsilons": [1, 0.5], "layer": "layer4"}, "f")
    assert check.settings.steps == 3
    assert check.settings.epsilons == (1.0, 0.5)
    assert check.settings.layer == "layer4"
    assert configure_check(Configurable, {}, "f").settings.layer is None


@pytest.mark.parametrize(
    "table, message",
    [
        ({"stepz": 3}, r"unknown setting 'stepz' \(did you mean 'steps'\?\)"),
        ({"steps": 2.5}, "steps must be int, got float"),
        ({"targeted": "yes"}, "targeted must be bool, got str"),
        ({"epsilons": 0.1}, "epsilons must be a list"),
        ({"thresholds": {"score": 0.3}}, "must be a table with 'min' and/or 'max'"),
        ({"thresholds": {"score": {"min": "high"}}}, "score.min must be a number"),
    ],
)
def test_bad_check_settings_are_clear_errors(table, message):
    with pytest.raises(UsageError, match=message):
        configure_check(Configurable, table, "pyproject.toml")


def test_thresholds_override_and_drop_defaults():
    check = configure_check(Configurable, {"thresholds": {"score": {"min": 0.9}, "other": {"max": 2}}}, "f")
    assert set(check.active_thresholds) == {Threshold("score", "min", 0.9), Threshold("other", "max", 2.0)}
    assert configure_check(Configurable, {"thresholds": {"score": False}}, "f").active_thresholds == ()
    rel = configure_check(Configurable, {"thresholds": {"score": {"min": 0.9, "baseline": "resnet18"}}}, "f")
    assert rel.active_thresholds == (Threshold("score", "min", 0.9, "resnet18"),)


class Declared(Check):
    id = "test.declared"
    metrics = ("score", "n_images", "acc@*")
    thresholds = (Threshold("score", "min", 0.5),)

    @dataclass
    class Settings:
        budgets: tuple[str, ...] = ("a", "b")

    @classmethod
    def reported_metrics(cls, settings):
        return ("score", "n_images", *(f"acc@{b}" for b in settings.budgets))


def test_a_threshold_on_an_undeclared_metric_is_a_usage_error_with_a_suggestion():
    with pytest.raises(UsageError) as exc:
        configure_check(Declared, {"thresholds": {"scor": {"min": 0.9}}}, "pyproject.toml")
    assert str(exc.value) == (
        'pyproject.toml: [tool.auditkit.checks."test.declared"] thresholds: unknown metric \'scor\'; '
        "did you mean 'score'? (test.declared reports: score, n_images, acc@a, acc@b)"
    )
    with pytest.raises(UsageError, match=r"unknown metric 'zzz' \(test.declared reports: "):
        configure_check(Declared, {"thresholds": {"zzz": {"min": 0.9}}}, "f")
    with pytest.raises(UsageError, match="unknown metric 'scor'"):  # dropping a misspelled default too
        configure_check(Declared, {"thresholds": {"scor": False}}, "f")


def test_thresholds_are_validated_against_the_names_the_settings_produce():
    check = configure_check(Declared, {"budgets": ["c"], "thresholds": {"acc@c": {"min": 0.1}}}, "f")
    assert Threshold("acc@c", "min", 0.1) in check.active_thresholds
    with pytest.raises(UsageError, match=r"unknown metric 'acc@a'; did you mean 'acc@c'\?"):
        configure_check(Declared, {"budgets": ["c"], "thresholds": {"acc@a": {"min": 0.1}}}, "f")


def test_a_check_that_declares_no_metrics_accepts_any_threshold():
    assert Configurable.reported_metrics(Configurable.Settings()) == ()
    check = configure_check(Configurable, {"thresholds": {"anything@at_all": {"max": 1}}}, "f")
    assert Threshold("anything@at_all", "max", 1.0) in check.active_thresholds


def test_may_report_matches_exact_names_and_patterns():
    assert Declared.may_report("acc@b") and Declared.may_report("n_images")
    assert not Declared.may_report("acc@c")
    assert not Declared.may_report("acc@*")  # thresholds name exact metrics, never patterns
    assert Declared.may_report("acc@c", Declared.Settings(budgets=("c",)))
    assert Configurable.may_report("whatever")


# -- one declaration per option: auditkit.options.OPTIONS ----------------------------------------


def test_config_fields_the_file_keys_and_the_parser_all_come_from_the_option_table():
    import dataclasses

    from auditkit.cli import build_parser
    from auditkit.config import Config
    from auditkit.options import OPTIONS

    names = [f.name for f in dataclasses.fields(Config)]
    assert names[: len(OPTIONS)] == [o.name for o in OPTIONS]
    defaults = Config()
    for option in OPTIONS:
        assert getattr(defaults, option.name) == option.default
        if option.file_key:  # every file key is accepted, with the option's type
            sample = {str: "x", int: 1, float: 0.5, bool: True, list: [], dict: {}}[option.type]
            assert validate_file_table({option.file_key: sample}, "f") == {option.file_key: sample}
    run = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]
    flags = {s: a.dest for a in run._actions for s in a.option_strings}
    for option in OPTIONS:
        for flag in option.flags:
            assert flags[flag] == option.name


def test_the_checks_selection_and_the_per_check_tables_have_names_that_say_so():
    from auditkit.config import Config

    config = Config(select=["accuracy.*"], checks={"accuracy.clean": {"min_sample": 1}})  # the file's keys
    assert config.selected_checks == ["accuracy.*"] and config.check_settings == {"accuracy.clean": {"min_sample": 1}}
    assert (config.select, config.checks) == (config.selected_checks, config.check_settings)  # aliases
    recorded = config.to_json()
    assert recorded["select"] == ["accuracy.*"] and recorded["checks"] == {"accuracy.clean": {"min_sample": 1}}
    assert "selected_checks" not in recorded and "check_settings" not in recorded  # the report's keys are unchanged
    assert Config.from_json({**recorded, "command": "auditkit run --seed 1", "future_key": 1}).selected_checks == ["accuracy.*"]
    with pytest.raises(TypeError, match="both 'select' and 'selected_checks'"):
        Config(select=["a"], selected_checks=["b"])
    with pytest.raises(TypeError, match="did you mean 'seed'"):
        Config(sede=1)


def test_the_command_line_over_the_config_file(tmp_path, monkeypatch):
    from auditkit.cli import build_parser, config_from_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "auditkit.toml").write_text(
        'select = ["gradcam.*"]\nseed = 3\nplugins = ["a"]\nbaseline_weights = {alexnet = "a.pt"}\n'
        '[checks."accuracy.clean"]\nmin_sample = 2\n'
    )
    argv = ["run", "--checks", "accuracy.clean, whitebox.*", "-p", "b", "--baseline-weights", "resnet18=r.pt"]
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert config.selected_checks == ["accuracy.clean", "whitebox.*"]  # the command line replaces
    assert config.seed == 3 and config.check_settings == {"accuracy.clean": {"min_sample": 2}}  # the file's stay
    assert config.plugins == ["a", "b"]  # -p adds to the file's plugins
    assert config.baseline_weights == {"alexnet": "a.pt", "resnet18": "r.pt"}
    assert config.baselines == ["alexnet", "googlenet", "resnet18"] and config.json == "reports/report.json"
    for bad, message in ((["--max-images", "0"], "--max-images must be at least 1, got 0"),
                         (["--batch-size", "0"], "--batch-size must be at least 1, got 0")):
        with pytest.raises(UsageError, match=message):
            config_from_args(build_parser().parse_args(["run", *bad]), ["run", *bad])


def test_the_command_line_rebuilt_from_a_config():
    from auditkit.config import Config
    from auditkit.options import command_line, shell_command

    config = Config(data="synthetic:shapes?n=4", select=["cam.*"], max_images=4, html="x.html",
                    baseline_weights={"resnet18": "r.pt"}, offline=True, check_settings={"cam.consistency": {}})
    args = command_line(config)
    assert args[:4] == ["auditkit", "run", "--model", "<your model spec>"]
    assert args[4:] == ["--data", "synthetic:shapes?n=4", "--checks", "cam.*", "--baselines", "none",
                        "--baseline-weights", "resnet18=r.pt", "--offline", "--device", "auto", "--seed", "0",
                        "--max-images", "4", "--html", "x.html"]
    assert shell_command(Config(model="torchvision:resnet18", baselines=["alexnet", "resnet18"])) == (
        "auditkit run --model torchvision:resnet18 --baselines alexnet,resnet18 --device auto --seed 0")
