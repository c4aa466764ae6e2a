"""HTTP(S) prediction endpoints: the protocol, the client's retries and deadlines, and audits of
a real server on 127.0.0.1 whose every query is accounted for."""
from __future__ import annotations

import base64
import json
import re
import socket
import time

import numpy as np
import pytest
import torch

import auditkit
from auditkit import Outcome, UsageError
from auditkit.models.loaders import ModelOptions
from auditkit.models.blackbox import scores_to_probabilities
from auditkit.models.http_endpoint import (
    PROTOCOL,
    EndpointClient,
    EndpointError,
    HTTPTarget,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from auditkit.models.http_endpoint import load as load_http_target
from conftest import FAST, labelled_by
from transfer_servers import PredictionServer


# -- the protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["base64", "list"])
def test_requests_carry_the_images_exactly_as_documented(encoding):
    images = torch.rand(3, 3, 4, 5, generator=torch.Generator().manual_seed(0)).numpy()
    payload = json.loads(encode_request(images, encoding))
    assert payload["protocol"] == PROTOCOL and payload["shape"] == [3, 3, 4, 5] and payload["dtype"] == "float32"
    if encoding == "base64":  # little-endian float32, C order, as the docs say
        raw = np.frombuffer(base64.b64decode(payload["images"]), dtype="<f4").reshape(3, 3, 4, 5)
    else:
        raw = np.asarray(payload["images"], dtype=np.float32)
    assert np.array_equal(raw, images)
    assert np.array_equal(decode_request(encode_request(images, encoding)), images)


def test_decode_request_names_what_is_wrong():
    with pytest.raises(ValueError, match="holds 8 bytes; shape \\[1, 3, 2, 2\\] as float32 needs 48"):
        decode_request({"encoding": "base64", "shape": [1, 3, 2, 2], "images": base64.b64encode(b"12345678").decode()})
    with pytest.raises(ValueError, match="unknown encoding 'png'"):
        decode_request({"encoding": "png", "images": ""})


def test_responses_round_trip():
    kind, scores = decode_response(encode_response(scores=[[0.25, 0.75], [1.0, 0.0]]), 2, "here")
    assert kind == "scores" and scores.tolist() == [[0.25, 0.75], [1.0, 0.0]]
    kind, labels = decode_response(encode_response(labels=np.array([2, 0, 1])), 3, "here")
    assert kind == "labels" and labels.dtype == np.int64 and labels.tolist() == [2, 0, 1]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<html>502 Bad Gateway</html>", "not JSON ('<html>502 Bad Gateway</html>')"),
        (b"", "not JSON (an empty body)"),
        (b'{"predictions": [1, 2]}', "answered ['predictions']; expected a JSON object with exactly one of 'scores' or 'labels'"),
        (b'{"scores": [[0.5, 0.5]]}', "answered 1 entries of 'scores' for 2 images"),
        (b'{"scores": [[0.5, 0.5], [1.0]]}', "non-numbers or ragged rows"),
        (b'{"scores": [[0.5, NaN], [0.5, 0.5]]}', "NaN or infinite values in 1 of 2 rows"),
        (b'{"labels": [0, -1]}', "'labels' must be non-negative integer class indices"),
        (b'{"labels": [0.5, 1]}', "'labels' must be non-negative integer class indices"),
    ],
)
def test_malformed_answers_are_clear_errors(body, message):
    with pytest.raises(EndpointError) as info:
        decode_response(body, 2, "endpoint http://x/predict")
    assert message in str(info.value) and str(info.value).startswith("endpoint http://x/predict")


def test_scores_are_read_as_probabilities_or_softmaxed_logits():
    probs = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    assert torch.equal(scores_to_probabilities(probs), probs)
    logits = torch.tensor([[0.0, float(np.log(3.0))], [2.0, 2.0]])
    assert torch.allclose(scores_to_probabilities(logits), torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    assert torch.allclose(scores_to_probabilities(probs, "logits"), torch.softmax(probs, 1))


# -- the client --------------------------------------------------------------------------------


def test_busy_answers_are_retried_with_backoff_and_counted(target_cnn):
    with PredictionServer(target_cnn) as server:
        server.script = ["busy", "busy"]
        target = HTTPTarget(server.url, retries=3, backoff=0.05, timeout=5)
        t0 = time.monotonic()
        out = target.query(torch.rand(5, 3, 16, 16))
        waited = time.monotonic() - t0
    assert out.shape == (5, 4) and torch.allclose(out.sum(1), torch.ones(5))
    assert server.log.posts == 3 and server.log.images == 15  # every attempt carried the batch
    assert target.queries == 5  # ... but the check asked for 5 answers
    stats = target.client.stats
    # the metadata GET (404: none) and three POST attempts
    assert (stats.attempts, stats.retries, stats.images_sent, stats.statuses) == (4, 2, 15, {404: 1, 503: 2, 200: 1})
    assert waited >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s


def test_client_errors_are_not_retried(target_cnn):
    with PredictionServer(target_cnn) as server:
        client = EndpointClient(server.url, retries=3, backoff=0.01)
        status, body = client.request("GET")  # no metadata: 404, answered once
    assert status == 404 and server.log.gets == 1 and client.stats.retries == 0


def test_an_endpoint_without_get_closing_its_connection_is_fine(target_cnn):
    with PredictionServer(target_cnn, metadata="unsupported") as server:
        target = HTTPTarget(server.url, retries=0)
        assert target.metadata == {} and target.query(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert server.log.statuses == [501, 200] and target.client.stats.retries == 0


def test_a_server_that_errors_after_retries_is_a_clear_target_error(target_cnn):
    with PredictionServer(target_cnn, answer="error") as server:
        target = HTTPTarget(server.url, retries=1, backoff=0.01, timeout=5)
        with pytest.raises(EndpointError, match=r"answered HTTP 500 'model crashed: CUDA error' to a batch of 2 images"):
            target.query(torch.rand(2, 3, 16, 16))
    assert server.log.posts == 2


def test_a_hanging_server_times_out_instead_of_hanging(target_cnn):
    with PredictionServer(target_cnn, answer="hang") as server:
        target = HTTPTarget(server.url, retries=1, backoff=0.05, timeout=0.3)
        with pytest.raises(EndpointError, match=r"no answer after 2 attempt\(s\) with a 0.3 s timeout each \(last: timed out after 0.3 s\)"):
            target.query(torch.rand(2, 3, 16, 16))
    # the server would hang for 30 s: each of the two attempts gave up at its deadline instead
    assert server.log.posts == 2 and (target.client.stats.attempts, target.client.stats.retries) == (3, 1)


def test_a_dropped_connection_is_retried_on_a_fresh_one(target_cnn):
    with PredictionServer(target_cnn) as server:
        server.script = ["drop"]
        target = HTTPTarget(server.url, retries=2, backoff=0.01, timeout=5)
        assert target.query(torch.rand(3, 3, 16, 16)).shape == (3, 4)
    stats = target.client.stats
    # the kept-alive connection of the metadata GET was dropped: one immediate resend
    assert server.log.posts == 2 and server.log.images == 6
    assert (stats.attempts, stats.reconnects, stats.retries, stats.images_sent) == (3, 1, 0, 6)


def test_a_connection_dropped_again_is_retried_with_backoff(target_cnn):
    with PredictionServer(target_cnn) as server:
        server.script = ["drop", "drop"]
        target = HTTPTarget(server.url, retries=2, backoff=0.01, timeout=5)
        assert target.query(torch.rand(3, 3, 16, 16)).shape == (3, 4)
    stats = target.client.stats
    assert server.log.posts == 3 and (stats.reconnects, stats.retries, stats.images_sent) == (1, 1, 9)


def test_batches_are_split_to_the_servers_max_batch(target_cnn):
    meta = {"protocol": PROTOCOL, "returns": "scores", "num_classes": 4, "input_size": [3, 16, 16], "max_batch": 4}
    with PredictionServer(target_cnn, metadata=meta) as server:
        target = HTTPTarget(server.url, batch_size=32)
        images = torch.rand(10, 3, 16, 16)
        out = target.query(images)
    assert server.log.posts == 3 and server.log.images == 10  # 4 + 4 + 2
    with torch.no_grad():
        assert torch.allclose(out, torch.softmax(target_cnn(images).double(), 1).float(), atol=1e-6)
    assert (target.batch_size, target.num_classes, target.input_size) == (4, 4, (3, 16, 16))


def test_logits_answers_are_softmaxed(target_cnn):
    with PredictionServer(target_cnn, answer="logits") as server:
        target = HTTPTarget(server.url, encoding="list")
        images = torch.rand(4, 3, 16, 16)
        out = target.query(images)
    with torch.no_grad():
        assert torch.allclose(out, torch.softmax(target_cnn(images), 1), atol=1e-5)


# -- loading -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_is_a_usage_error_at_load_time(labelled_by_target):
    url = f"http://127.0.0.1:{_free_port()}/predict#retries=1&backoff=0.01&timeout=0.5"
    message = r"cannot reach the endpoint: endpoint http://127.0.0.1:\d+/predict: no answer after 2 attempt"
    with pytest.raises(UsageError, match=message):
        auditkit.audit(url, labelled_by_target, checks=["transfer.proxy"])
    with pytest.raises(UsageError, match=message):
        load_http_target(url, ModelOptions())


def test_a_garbage_endpoint_is_a_usage_error_at_the_probe(target_cnn, labelled_by_target):
    with PredictionServer(target_cnn, answer="garbage") as server:
        with pytest.raises(UsageError, match=r"answered something that is not JSON \('<html>Internal proxy page</html>'\)"):
            auditkit.audit(server.url, labelled_by_target, checks=["transfer.proxy"])


@pytest.mark.parametrize(
    "fragment, message",
    [
        ("#timeuot=3", "unknown option 'timeuot'; did you mean 'timeout'?"),
        ("#timeout=soon", "option timeout='soon'; expected float"),
        ("#retries=-1", "option retries=-1; expected at least 0"),
        ("#encoding=png", "option encoding='png'; expected one of base64, list"),
    ],
)
def test_bad_client_options_are_usage_errors(fragment, message, labelled_by_target):
    with pytest.raises(UsageError, match=re.escape(message)):
        auditkit.audit("http://127.0.0.1:9/predict" + fragment, labelled_by_target, checks=["transfer.proxy"])


# -- audits ------------------------------------------------------------------------------------


def test_the_audit_counts_exactly_the_queries_the_server_saw(target_cnn, labelled_by_target):
    data = labelled_by_target
    with PredictionServer(target_cnn) as server:
        run = auditkit.audit(server.url + "#batch_size=16", data, checks=["transfer.proxy"], settings={"transfer.proxy": FAST})
    result = run["transfer.proxy"]
    assert result.outcome is not Outcome.ERROR, result.message
    m = result.metrics
    probe, clean = 2, len(data.eval)  # the host's probe of the spec, the shared clean pass
    assert server.log.images == probe + clean + m["queries"] + m["attack_queries"]
    # 48 seed images (10 held out), one augmentation round of the 38 others
    assert m["queries"] == 48 + 38 <= FAST["query_budget"]
    # each attacked image: PGD in Linf and L2, then the noise control in Linf and L2
    assert m["attack_queries"] == 4 * m["n_images"] == 4 * len(data.eval)
    assert server.log.gets == 1 and set(server.log.statuses) == {200, 404}
    assert run.models[0]["endpoint"]["images_sent"] == server.log.images


def test_a_label_only_endpoint_trains_the_proxy_on_labels(colour_cnn, shapes):
    data = labelled_by(colour_cnn, shapes)
    with PredictionServer(colour_cnn, answer="labels") as server:
        run = auditkit.audit(server.url, data, checks=["transfer.proxy", "accuracy.clean"], settings={"transfer.proxy": FAST})
    result = run["transfer.proxy"]
    assert run.models[0]["returns"] == "labels" and run.models[0]["num_classes"] is None
    assert run["accuracy.clean"].metrics["top1"] == 1.0  # the data is labelled by this very model
    assert result.outcome is not Outcome.ERROR, result.message
    assert result.details["training"]["trained_on"] == "labels"
    m = result.metrics
    # 86 label answers teach more than always answering the commonest class would (17 of 32)
    commonest = data.eval.labels.bincount().max().item() / len(data.eval)
    assert m["proxy_agreement"] > commonest + 0.1, (m["proxy_agreement"], commonest)
    assert server.log.images == 2 + len(data.eval) + m["queries"] + m["attack_queries"]


def test_an_endpoint_failing_mid_audit_is_an_error_outcome_not_a_hang(target_cnn, labelled_by_target):
    data = labelled_by_target
    with PredictionServer(target_cnn) as server:
        # the probe and the clean pass are answered; then the server hangs
        server.script = ["scores"] * 3 + ["hang"] * 10
        run = auditkit.audit(
            server.url + "#timeout=0.3&retries=1&backoff=0.01", data,
            checks=["transfer.proxy"], settings={"transfer.proxy": FAST},
        )
    result = run["transfer.proxy"]
    assert result.outcome is Outcome.ERROR
    assert result.message.startswith("endpoint http://127.0.0.1:") and "no answer after 2 attempt(s) with a 0.3 s timeout" in result.message
    # three answered, then the first query of the check: two attempts, each ended at its deadline
    assert server.log.posts == 3 + 2
