"""Bad-input collection: reports read back (``auditkit report``, ``--compare``) and the
report files an audit writes. A report is data: nothing it names is imported; an output that
cannot be written is found before anything loads, and one that fails at the end costs no
other its file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditkit.errors import ExitCode

from .conftest import DATA, FACTORY, assert_no_traceback, assert_usage_error

RUN = ("run", "--baselines", "none", "--checks", "accuracy.clean", "--model", FACTORY, "--data", DATA)


@pytest.fixture
def report(cli, tmp_path) -> Path:
    """A real report of a tiny audit, to tamper with."""
    result = cli(*RUN, "--json", "good.json", "-q")
    assert result.code in (0, 1), result.err
    return tmp_path / "good.json"


def _tampered(path: Path, tmp_path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(data))
    return out


# -- auditkit report never runs code a report names ----------------------------------------------


def test_a_report_naming_a_stdlib_module_imports_nothing(cli, report, tmp_path):
    bad = _tampered(report, tmp_path, lambda r: r["config"].update(plugins=["this"]))
    result = cli("report", str(bad), "--html", "s.html")
    assert result.code == ExitCode.OK, result.err
    assert "Beautiful is better than ugly" not in result.out + result.err  # `import this` prints the Zen
    assert "pass -p this" in result.out and (tmp_path / "s.html").is_file()


def test_a_report_naming_a_module_beside_it_runs_nothing(cli, report, tmp_path):
    marker = tmp_path / "ran.txt"
    for folder in (tmp_path, tmp_path / "elsewhere"):
        folder.mkdir(exist_ok=True)
        (folder / "ci_helpers.py").write_text(f"open({str(marker)!r}, 'w').write('code from a report ran')\n")
    bad = _tampered(report, tmp_path, lambda r: r["config"].update(plugins=["ci_helpers"]))
    moved = tmp_path / "elsewhere" / "r.json"
    moved.write_text(bad.read_text())
    for path in (bad, moved):
        assert cli("report", str(path), "--html", str(tmp_path / "s.html")).code == ExitCode.OK
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda r: r.update(results="all good"), "results"),
        (lambda r: r.update(models="resnet"), "models"),
        (lambda r: r.update(config="fast"), "config"),
        (lambda r: r.update(environment=["python", "3.11"]), "environment"),
        (lambda r: r["summary"].update(exit_code="one"), "summary.exit_code"),
        (lambda r: r["results"][0]["metrics"].update(top1="0.9"), "results[0].metrics.top1"),
        (lambda r: r["config"].update(plugins="this"), "config.plugins"),
        (lambda r: r.pop("summary"), "summary"),
    ],
    ids=["results-str", "models-str", "config-str", "environment-list", "exit-code-str", "metric-str",
         "plugins-str", "no-summary"],
)
def test_a_malformed_report_is_one_line_naming_the_field(cli, report, tmp_path, edit, field):
    bad = _tampered(report, tmp_path, edit)
    result = cli("report", str(bad), "--html", "s.html")
    assert_usage_error(result, "not a valid auditkit report", field)
    assert not (tmp_path / "s.html").exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"schema": "other/1"}', "\udcff"], ids=["broken", "list", "foreign", "binary"])
def test_report_files_that_are_no_report(cli, tmp_path, content):
    path = tmp_path / "r.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    assert_usage_error(cli("report", str(path)), str(path))


def test_report_never_writes_over_its_input(cli, report, tmp_path):
    """`auditkit report X.html` where X.html holds the JSON: the default output would be the input."""
    disguised = tmp_path / "X.html"
    disguised.write_text(report.read_text())
    before = disguised.read_bytes()
    result = cli("report", str(disguised))
    assert result.code == ExitCode.OK, result.err
    assert disguised.read_bytes() == before
    assert (tmp_path / "X.scorecard.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert_usage_error(cli("report", str(disguised), "--html", str(disguised)), "--html", "being read")
    assert disguised.read_bytes() == before


def test_report_checks_its_output_path_before_rendering(cli, report):
    assert_usage_error(cli("report", str(report), "--html", "/dev/null/s.html"), "--html", "/dev/null/s.html")


# -- output paths: checked before anything loads ----------------------------------------------------


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if the audit gets as far as loading the data."""
    import auditkit.main

    def boom(*args, **kwargs):
        raise AssertionError("the data was loaded before the output paths were checked")

    monkeypatch.setattr(auditkit.main, "resolve_device", boom)


@pytest.mark.parametrize(
    ("option", "path"),
    [("--json", "/dev/null/r.json"), ("--junitxml", "/proc/version"), ("--md", "/proc/version"),
     ("--html", "/dev/null/x/s.html"), ("--junitxml", ".")],
    ids=["json-under-a-file", "junit-proc", "md-proc", "html-under-a-file", "junit-a-folder"],
)
def test_an_unwritable_output_is_refused_before_anything_loads(cli, tmp_path, nothing_loads, option, path):
    if path.startswith("/proc") and not Path(path).exists():
        pytest.skip("no /proc here")
    result = cli(*RUN, *(["--json", "r.json"] if option != "--json" else []), option, path)
    assert_usage_error(result, option, path)
    assert not (tmp_path / "r.json").exists()


def test_two_outputs_on_one_path_are_a_usage_error(cli, tmp_path, nothing_loads):
    result = cli(*RUN, "--json", "out.x", "--html", "out.x", "--junitxml", "out.x")
    assert_usage_error(result, "out.x", "--json", "--html")
    assert not (tmp_path / "out.x").exists()


def test_checking_an_existing_output_leaves_it_untouched(cli, tmp_path):
    keep = tmp_path / "old.md"
    keep.write_text("yesterday's summary")
    result = cli(*RUN, "--json", "r.json", "--md", "old.md", "--junitxml", "/dev/null/j.xml")
    assert_usage_error(result, "--junitxml")
    assert keep.read_text() == "yesterday's summary" and not (tmp_path / "r.json").exists()


def test_a_writer_failing_at_the_end_costs_no_other_output(cli, tmp_path, monkeypatch):
    import auditkit.reporters.junit as junit

    def disk_full(session):
        raise OSError(28, "No space left on device", str(tmp_path / "j.xml"))

    monkeypatch.setattr(junit, "build_junit", disk_full)
    # an audit that passes: the untrained model is held to no accuracy rule here
    (tmp_path / "auditkit.toml").write_text('[tool.auditkit.checks."accuracy.clean"]\nthresholds = { p_above_chance = false }\n')
    result = cli(*RUN, "--json", "r.json", "--junitxml", "j.xml", "--md", "m.md", "--html", "s.html")
    assert_no_traceback(result)
    assert result.code == ExitCode.USAGE_ERROR  # the audit passed; an output is missing: never exit 0
    assert (tmp_path / "r.json").is_file() and (tmp_path / "m.md").is_file() and (tmp_path / "s.html").is_file()
    assert f"JUnit XML j.xml NOT written: No space left on device ({tmp_path / 'j.xml'})" in result.out
    assert "1 output NOT written" in result.out.splitlines()[-1]
    assert json.loads((tmp_path / "r.json").read_text())["results"]


# -- --compare: only like with like ---------------------------------------------------------------


def test_compare_against_other_data_is_refused_before_the_audit(cli, report, tmp_path, monkeypatch):
    three = _tampered(report, tmp_path, lambda r: r["data"].update(num_classes=3, class_names=["a", "b", "c"]))
    import auditkit.session

    monkeypatch.setattr(auditkit.session.AuditSession, "run", lambda *a: pytest.fail("the checks ran"))
    result = cli(*RUN, "--json", "r.json", "--compare", str(three))
    assert_usage_error(result, "--compare", "other data", "3 classes then, 4 now")
    fewer = _tampered(report, tmp_path, lambda r: r["data"].update(n_eval=6))
    assert_usage_error(cli(*RUN, "--json", "r.json", "--compare", str(fewer)), "6 evaluation images then, 8 now")


def test_compare_with_another_model_says_so_and_still_compares(cli, report, tmp_path):
    other = _tampered(report, tmp_path, lambda r: r["models"][0].update(spec="torchvision:resnet50"))
    result = cli(*RUN, "--json", "r.json", "--compare", str(other))
    assert result.code in (0, 1) and "Traceback" not in result.err
    warnings = json.loads((tmp_path / "r.json").read_text())["warnings"]
    assert any("comparing model" in w and "torchvision:resnet50" in w for w in warnings)


def test_compare_with_a_string_metric_fails_when_loading_not_after_the_audit(cli, report, tmp_path, nothing_loads):
    bad = _tampered(report, tmp_path, lambda r: r["results"][0]["metrics"].update(top1="high"))
    result = cli(*RUN, "--json", "r.json", "--compare", str(bad))
    assert_usage_error(result, "--compare", "results[0].metrics.top1")


def test_compare_with_the_same_data_finds_a_regression(cli, report, tmp_path):
    """The refusals above must not block the real use: a metric that fell is reported."""
    better = _tampered(report, tmp_path, lambda r: r["results"][0]["metrics"].update(top1=1.0))
    result = cli(*RUN, "--json", "r.json", "--compare", str(better))
    assert result.code == ExitCode.CHECKS_FAILED and "REGRESSED accuracy.clean top1 fell from 1" in result.out
    assert "1 regressed" in result.out.splitlines()[-1]  # the final line says why the run exits 1



def test_an_output_under_a_file_names_the_file_in_the_way(cli, tmp_path, nothing_loads):
    (tmp_path / "notadir").write_text("x")
    line = assert_usage_error(cli(*RUN, "--json", "notadir/r.json"), "--json")
    assert "notadir is a file, not a folder" in line and "File exists" not in line


def test_compare_without_regressions_says_so(cli, report):
    result = cli(*RUN, "--json", "r.json", "--compare", str(report))
    assert f"no headline metric regressed against {report}" in result.out
