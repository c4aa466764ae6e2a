"""The command line: exit codes, one-line usage errors, reports that validate, installed plugins."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import torch

from auditkit.cli import main
from auditkit.reporters.json_report import load_schema
from auditkit.testing.models import TinyGAPNet

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:shapes?n=8&size=32"
FACTORY = "auditkit.testing.models:tiny_factory"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default reports/ go here, never into the checkout


def run_cli(argv, checks="accuracy.clean"):
    """`auditkit run` of one cheap check, without the default classic baselines (they train;
    see test_baselines). The plugins' own tests cover their checks."""
    return main(["run", "--baselines", "none", *(["--checks", checks] if checks else []), *argv])


def _err_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_run_writes_a_schema_valid_report_and_junit(tmp_path, capsys):
    code = run_cli(["--model", FACTORY, "--data", DATA, "--json", "r.json", "--junitxml", "j.xml"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert "accuracy.clean" in out and "auditkit session starts" in out
    assert out.rstrip().splitlines()[-1].strip("= ").endswith("s")  # "... passed in 0.3s"
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert report["models"][0]["role"] == "target" and report["models"][0]["num_classes"] == 4
    assert report["summary"]["exit_code"] == code
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("auditkit.target", r["check"]) for r in report["results"]
    ]


def test_torchvision_model_end_to_end(tmp_path):
    code = run_cli(["--model", "torchvision:resnet18", "--data", DATA, "--json", "r.json", "-q", "--max-images", "4"],
                   checks=None)
    assert code in (0, 1)
    jsonschema.validate(json.loads((tmp_path / "r.json").read_text()), load_schema())


def test_default_json_goes_to_reports(tmp_path):
    assert run_cli(["--model", FACTORY, "--data", DATA, "-q"]) in (0, 1)  # ran (the untrained model may fail)
    assert (tmp_path / "reports" / "report.json").is_file()


def test_missing_model_file_exits_4_with_one_line(tmp_path, capsys):
    code = run_cli(["--model", "no/such/model.py:build", "--data", DATA])
    assert code == 4
    lines = _err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("auditkit: error:") and "no/such/model.py" in lines[0]


def test_unknown_spec_exits_4(capsys):
    assert run_cli(["--model", "nonsense-spec", "--data", DATA]) == 4
    assert "nonsense-spec" in _err_lines(capsys)[0]
    assert run_cli(["--model", FACTORY, "--data", "nope:thing"]) == 4


def test_pickled_model_is_refused_without_trust_pickle(tmp_path, capsys):
    torch.save(TinyGAPNet(num_classes=4), tmp_path / "model.pt")
    assert run_cli(["--model", "model.pt", "--data", DATA]) == 4
    assert "--trust-pickle" in _err_lines(capsys)[0]
    assert run_cli(["--model", "model.pt", "--data", DATA, "--trust-pickle", "-q"]) in (0, 1)  # loaded and ran


def test_wrong_input_size_exits_4_naming_expected_and_got(tmp_path, capsys):
    model_py = tmp_path / "fcnet.py"
    model_py.write_text(
        "from auditkit.testing.models import TinyFCNet\n"
        "def build(num_classes=4):\n    return TinyFCNet(num_classes=num_classes, input_size=32)\n"
    )
    assert run_cli(["--model", f"{model_py}:build", "--data", "synthetic:shapes?n=4&size=48"]) == 4
    line = _err_lines(capsys)[0]
    assert "[3, 48, 48]" in line


def test_unknown_config_key_exits_4(tmp_path, capsys):
    (tmp_path / "auditkit.toml").write_text("[checks.\"accuracy.clean\"]\nper_clas = true\n")
    assert run_cli(["--model", FACTORY, "--data", DATA]) == 4
    assert "unknown setting 'per_clas'" in _err_lines(capsys)[0]


def test_bad_options_exit_4(capsys):
    assert run_cli(["--model", FACTORY, "--data", DATA, "--device", "tpu"]) == 4
    assert run_cli(["--model", FACTORY, "--data", DATA], checks="no.such") == 4
    assert run_cli(["--bogus-flag"]) == 4
    assert main(["frobnicate"]) == 4


def test_checks_lists_builtin_checks_with_plugin_and_requirements(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("accuracy.clean"))
    assert "accuracy (auditkit-" in line and "labels" in line


def test_demo_runs_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("auditkit.demo.DEMO_DATA", "synthetic:shapes?n=4&train=8&size=32&classes=2")
    monkeypatch.setattr("auditkit.demo.DEMO_MAX_IMAGES", 2)
    monkeypatch.setattr("auditkit.demo.DEMO_BASELINE_STEPS", 1)
    # one baseline: the demo audits each the same way, and AlexNet's and GoogLeNet's checks
    # would triple the test's time (the baselines' own tests cover them)
    monkeypatch.setattr("auditkit.demo.DEMO_BASELINES", ("resnet18",))
    assert main(["demo", "--out", str(tmp_path / "demo"), "-q"]) == 0
    assert (tmp_path / "demo" / "report.json").is_file()
    out = capsys.readouterr().out
    assert "auditkit demo:" in out
    # one training step leaves the baselines at chance: weak, and the story says so
    assert "without the task learned (no better than chance, or one class for nearly every image)" in out


def test_a_separately_installed_plugin_appears_and_runs(tmp_path):
    """Install the example plugin package into its own folder (as pip would into a venv) and
    run the real `auditkit` executable with it on the path."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(ROOT / "examples" / "auditkit-example-plugin")],
        check=True, capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    exe = [sys.executable, "-m", "auditkit.cli"]
    listing = subprocess.run([*exe, "checks"], env=env, capture_output=True, text=True, check=True).stdout
    assert "example.confidence" in listing and "auditkit-example-plugin-0.1.0" in listing
    done = subprocess.run(
        [*exe, "run", "--baselines", "none", "--checks", "accuracy.clean,example.*", "--model", FACTORY, "--data", DATA, "--json", "r.json", "-q"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    result = next(r for r in report["results"] if r["check"] == "example.confidence")
    assert 0.0 < result["metrics"]["mean_confidence"] <= 1.0
    disabled = subprocess.run([*exe, "checks", "-p", "no:example"], env=env, capture_output=True, text=True).stdout
    assert "example.confidence" not in disabled
    own_tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "examples" / "auditkit-example-plugin" / "tests")],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert own_tests.returncode == 0, own_tests.stdout + own_tests.stderr


def test_baselines_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["run", "--model", FACTORY, "--data", "synthetic:shapes?n=4&train=8&size=32", "--checks", "accuracy.clean",
                 "--baselines", "alexnet", "--baseline-epochs", "1", "--json", "r.json", "-q"])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, load_schema())
    assert [(m["name"], m["role"]) for m in report["models"]] == [("target", "target"), ("alexnet", "baseline")]
    assert report["models"][1]["info"]["source"] == "trained"
    roles = {(r["model"], r["role"]) for r in report["results"]}
    assert roles == {("target", "target"), ("alexnet", "baseline")}
    assert main(["run", "--model", FACTORY, "--data", DATA, "--baselines", "vgg99"]) == 4


_SIGNALLING_PLUGIN = '''
import os, signal
from auditkit import Check, Findings, hookimpl

class SendsSignal(Check):
    """Stands for a CI runner cancelling the job while this check runs."""
    id = "zz.signal"

    def run(self, ctx):
        # raise_signal sends it to this thread: os.kill may hand a process-directed signal to
        # one of torch's worker threads, which on a loaded machine may run its handler late
        signal.raise_signal(getattr(signal, os.environ["AUDITKIT_TEST_SIGNAL"]))
        return Findings(metrics={"reached": 1.0})

@hookimpl
def auditkit_collect_checks(config):
    return [SendsSignal]
'''


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_mid_run_writes_the_results_so_far_and_exits_2(tmp_path, monkeypatch, capsys, signame):
    # Python raises KeyboardInterrupt on SIGINT unless SIGINT was ignored when it started, as
    # a shell without job control does for `cmd &` (and so for a test run started that way):
    # install Python's default handler for the test, as an interactive or CI process has it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _signal_mid_run(tmp_path, monkeypatch, capsys, signame)
    finally:
        signal.signal(signal.SIGINT, previous)


def _signal_mid_run(tmp_path, monkeypatch, capsys, signame):
    (tmp_path / "signalling_plugin.py").write_text(_SIGNALLING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AUDITKIT_TEST_SIGNAL", signame)
    code = run_cli(["--model", FACTORY, "--data", DATA, "--json", "r.json", "-p", "signalling_plugin"],
                   checks="accuracy.clean,zz.signal")
    assert code == 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["check"] for r in report["results"]] == ["accuracy.clean"]  # gathered before the signal
    assert report["summary"]["interrupted"] is True and report["summary"]["exit_code"] == 2
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_during_start_up_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "interrupts_at_configure.py").write_text(
        "from auditkit import hookimpl\n\n@hookimpl\ndef auditkit_configure(config):\n    raise KeyboardInterrupt\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code = run_cli(["--model", FACTORY, "--data", DATA, "-p", "interrupts_at_configure"])
    assert code == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "interrupted" in err[0], err
