"""Hostile models: files of random bytes, cut short, of another architecture or naming Python
classes, export archives torch refuses, black boxes answering strings, endpoints that drip
their answer. Each is one clear line (or a check's error), and no code named by a file runs."""
from __future__ import annotations

import os
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

import auditkit
from auditkit import Outcome
from auditkit.errors import UsageError
from auditkit.testing.models import tiny_factory
from auditkit.weights import checkpoint_name, load_state_dict as load_pretrained
from auditkit.models.http_endpoint import EndpointClient, EndpointError

from .conftest import DATA, FACTORY, assert_usage_error, run_cli_subprocess

RUN = ("run", "--baselines", "none", "--checks", "accuracy.clean", "--data", DATA, "--json", "r.json")


class Gadget:
    """Saved inside a checkpoint, it makes the file need this module to unpickle."""


def _with_weights(cli, path: Path):
    return cli(*RUN, "--model", FACTORY, "--weights", str(path))


def _random_bytes(path: Path, head: bytes = b"") -> Path:
    path.write_bytes(head + os.urandom(4096))
    return path


def _truncated(path: Path, obj, **save_options) -> Path:
    torch.save(obj, path, **save_options)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- files that are not what they claim --------------------------------------------------------


@pytest.mark.parametrize("head", [b"", b"\x80"], ids=["bytes", "pickle-opcode-first"])
def test_random_bytes_are_not_a_pytorch_file_and_never_a_pickle_to_trust(cli, tmp_path, head):
    bad = _random_bytes(tmp_path / "bad.pt", head)
    for result in (_with_weights(cli, bad), cli(*RUN, "--model", str(bad))):
        line = assert_usage_error(result, "bad.pt", "not a PyTorch file")
        assert "pass --trust-pickle" not in line and "pickled" not in line


def test_random_bytes_as_weights_say_what_was_expected(cli, tmp_path):
    line = assert_usage_error(_with_weights(cli, _random_bytes(tmp_path / "bad.pt")), "not a PyTorch file")
    assert line.endswith("not a PyTorch file; expected a state_dict saved with torch.save(model.state_dict(), PATH)")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_truncated_torch_save_file_is_called_corrupt_or_truncated(cli, tmp_path, legacy):
    bad = _truncated(tmp_path / "cut.pt", tiny_factory().state_dict(), _use_new_zipfile_serialization=not legacy)
    for result in (_with_weights(cli, bad), cli(*RUN, "--model", str(bad))):
        line = assert_usage_error(result, "cut.pt", "corrupt or truncated", "was the download or copy cut short?")
        assert "not a torch.save file" not in line and "not a PyTorch file" not in line


def test_a_state_dict_of_another_architecture_leads_with_missing_and_unexpected_keys(cli, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    line = assert_usage_error(_with_weights(cli, path), "does not fit model")
    assert "missing keys (first: features.0.weight" in line, line
    assert "unexpected keys (first: conv1.weight, bn1.weight, bn1.bias, ...)" in line, line
    assert line.index("missing keys") < line.index("with other shapes (first: fc.weight [4, 512]")
    assert "num_classes" not in line


def test_only_a_classifier_of_another_size_blames_num_classes(cli, tmp_path):
    path = tmp_path / "seven.pt"
    torch.save(tiny_factory(num_classes=7).state_dict(), path)
    line = assert_usage_error(_with_weights(cli, path), "fc.weight [7, 16] (model has [4, 16])")
    assert line.endswith("its classifier has 7 outputs; is num_classes right?")
    assert "missing keys" not in line and "unexpected keys" not in line


def test_a_pickle_naming_a_class_is_refused_naming_it_and_never_unpickled(cli, tmp_path, monkeypatch):
    path = tmp_path / "gadget.pt"
    torch.save({"weight": torch.zeros(2), "gadget": Gadget()}, path)
    needed = f"{Gadget.__module__}.Gadget"
    monkeypatch.setattr(Gadget, "__setstate__", lambda *a: pytest.fail("unpickled"), raising=False)
    line = assert_usage_error(cli(*RUN, "--model", str(path)), f"needs {needed}", "pass --trust-pickle")
    assert "weights_only" not in line
    # as weights it is never unpickled either, and --trust-pickle does not apply to them
    line = assert_usage_error(_with_weights(cli, path), f"it needs {needed}", "refused")
    assert "trust-pickle" not in line


def test_a_torch_save_of_plain_tensors_with_a_newer_pickle_protocol_is_not_a_pickle_to_trust(cli, tmp_path):
    path = tmp_path / "proto4.pt"
    torch.save(tiny_factory().state_dict(), path, pickle_protocol=4)
    line = assert_usage_error(_with_weights(cli, path), "tensors-only loader cannot read it", "pickle_protocol")
    assert "trust-pickle" not in line


# -- torch.export archives ---------------------------------------------------------------------


def _export_without(path: Path, member: str) -> Path:
    """A real torch.export archive of the tiny model with ``member`` left out."""
    whole = path.with_name("whole.pt2")
    torch.export.save(torch.export.export(tiny_factory().eval(), (torch.rand(2, 3, 32, 32),)), whole)
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(path, "w") as damaged:
        for name in source.namelist():
            if not name.endswith("/" + member):
                damaged.writestr(name, source.read(name))
    return path


def test_a_refused_export_archive_is_one_line_without_torchs_logged_traceback(tmp_path):
    bad = _export_without(tmp_path / "model.pt2", "archive_version")
    result = run_cli_subprocess(*RUN, "--model", str(bad), cwd=tmp_path)
    line = assert_usage_error(result, "model.pt2", "not loadable as a torch.export archive", "archive_version")
    assert "This is an internal miniz error" not in line


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_a_pt2_name_on_random_or_truncated_bytes_is_said_so(cli, tmp_path, kind):
    if kind == "random":
        bad, expected = _random_bytes(tmp_path / "model.pt2"), "not a PyTorch file"
    else:
        bad, expected = _truncated(tmp_path / "model.pt2", tiny_factory().state_dict()), "corrupt or truncated"
    assert_usage_error(cli(*RUN, "--model", str(bad)), expected)


# -- --baseline-weights: the reader of --weights ---------------------------------------------------


def _bad_file(kind: str, tmp_path: Path) -> Path:
    if kind == "random":
        return _random_bytes(tmp_path / "bad.pt")
    if kind == "truncated":
        return _truncated(tmp_path / "bad.pt", tiny_factory().state_dict())
    torch.save({"weight": torch.zeros(2), "gadget": Gadget()}, tmp_path / "bad.pt")
    return tmp_path / "bad.pt"


@pytest.mark.parametrize("kind", ["random", "truncated", "gadget"])
def test_a_bad_baseline_weights_file_gets_the_same_line_as_weights(cli, tmp_path, kind):
    bad = _bad_file(kind, tmp_path)
    as_weights = assert_usage_error(_with_weights(cli, bad), str(bad))
    result = cli(
        "run", "--model", FACTORY, "--checks", "accuracy.clean", "--data", DATA, "--json", "r.json",
        "--baselines", "resnet18", "--baseline-weights", f"resnet18={bad}",
    )
    as_baseline = assert_usage_error(result, f"--baseline-weights resnet18={bad}")
    assert as_baseline == as_weights.replace(f"--weights {bad}", f"--baseline-weights resnet18={bad}")
    assert "weights_only" not in as_baseline


def test_a_damaged_pretrained_checkpoint_is_called_corrupt(tmp_path):
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    (tmp_path / "hub").mkdir()
    path = _truncated(tmp_path / "hub" / checkpoint_name(weights), {"fc.bias": torch.zeros(1000)})
    with pytest.raises(UsageError) as err:
        load_pretrained(weights, weights_dir=str(tmp_path / "hub"), offline=True, what="baseline resnet18")
    assert str(err.value) == (
        f"baseline resnet18: pretrained weights {str(path)!r}: corrupt or truncated zip archive (its zip directory, "
        "at the end of the file, is missing); was the download or copy cut short?"
    )


# -- black boxes answering what is not scores or labels ------------------------------------------


@pytest.mark.parametrize(
    "answer, described",
    [
        (lambda x: ["cat"] * len(x), "a list of 2 items of type str, first 'cat'"),
        (lambda x: "cat", "a str, 'cat'"),
        (lambda x: None, "None"),
        (lambda x: {"scores": [[0.5, 0.5]] * len(x)}, "a dict with keys ['scores']"),
        (lambda x: torch.zeros(len(x), 2, 2), "a tensor of dtype float32 and shape [2, 2, 2]"),
    ],
    ids=["strings", "string", "none", "dict", "3d"],
)
def test_a_black_box_answering_garbage_is_refused_at_the_probe_naming_it(answer, described):
    expected = "expected scores, a [2, num_classes] array of numbers (a [2] array of integer labels needs returns='labels')"
    with pytest.raises(UsageError) as err:
        auditkit.audit(answer, DATA, checks=["accuracy.clean"])
    assert str(err.value) == f"target: the black box returned {described}; {expected}"


def test_a_black_box_turning_to_garbage_mid_audit_is_that_checks_error():
    calls = []

    def predict(x):
        calls.append(len(x))
        return torch.full((len(x), 4), 0.25) if len(calls) == 1 else ["cat"] * len(x)

    run = auditkit.audit(predict, DATA, checks=["accuracy.clean"])
    result = run["accuracy.clean"]
    assert result.outcome is Outcome.ERROR
    assert "the black box returned a list of" in result.message and "items of type str" in result.message
    assert "Traceback" not in result.message and "\n" not in result.message


# -- an endpoint that drips its answer ----------------------------------------------------------


class DripServer:
    """Answers every request one byte every ``interval`` seconds and counts the bytes it sent
    before the client hung up: ``"headers"`` drips a status line and headers (no body), ``"body"``
    sends its headers at once and drips the body. A client that reads on past its deadline
    gets the whole answer."""

    BODY = b'{"scores": [[0.5, 0.5]]}' + b" " * 100

    def __init__(self, where: str, interval: float = 0.05):
        self.requests = 0
        self.sent: list[int] = []
        self.finished = threading.Semaphore(0)
        server = self
        if where == "headers":
            prompt = b""
            dripped = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"x" * 60 + b"\r\n\r\n"
        else:
            prompt = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(self.BODY)
            dripped = self.BODY
        self.total = len(dripped)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _drip(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                sent = 0
                try:
                    self.wfile.write(prompt)
                    for i in range(len(dripped)):
                        self.wfile.write(dripped[i : i + 1])
                        self.wfile.flush()
                        sent += 1
                        time.sleep(interval)
                except OSError:  # the client hung up
                    pass
                server.sent.append(sent)
                self.close_connection = True
                server.finished.release()

            do_GET = do_POST = _drip

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "DripServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_an_endpoint_dripping_its_answer_hits_the_deadline_of_every_attempt(where):
    with DripServer(where) as server:
        client = EndpointClient(server.url, timeout=0.3, retries=1, backoff=0.01)
        with pytest.raises(EndpointError, match=r"no answer after 2 attempt\(s\) with a 0.3 s timeout each \(last: timed out"):
            client.request("POST", b"{}")
        # each handler notices the client hung up at its next byte; a safety net, not a time limit
        for _ in range(2):
            assert server.finished.acquire(timeout=60)
    assert server.requests == 2 == client.stats.attempts
    assert len(server.sent) == 2 and all(sent < server.total for sent in server.sent), (server.sent, server.total)
