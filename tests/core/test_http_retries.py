"""The HTTP endpoint client on urllib3: which answers are retried, how long it waits between
attempts (Retry-After included; recorded, not slept), what it counts, answers too large, and
TLS: a handshake that fails is one error, one that never completes ends at the attempt's
deadline, which connecting and the handshake share."""
from __future__ import annotations

import email.utils
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import urllib3.connection

from auditkit.models.http_endpoint import EndpointClient, EndpointError

SCORES = json.dumps({"scores": [[0.25, 0.75]]}).encode()


class ScriptedServer:
    """Answers each request on 127.0.0.1 with the next ``(status, headers, body)`` of ``script``,
    then 200 with one row of scores; counts the requests."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]):
        self.script = list(script)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                status, headers, body = server.script.pop(0) if server.script else (200, {}, SCORES)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The client's waits between attempts, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def _busy(retry_after: str | None = None, status: int = 503) -> tuple[int, dict[str, str], bytes]:
    return status, ({"Retry-After": retry_after} if retry_after is not None else {}), b'{"error": "busy"}'


@pytest.mark.parametrize(
    "retry_after, waited",
    [
        ("3", 3.0),  # longer than the backoff: the server's wish
        ("0.25", 0.25),  # fractions too, which urllib3 alone refuses
        ("0", 0.1),  # shorter than the backoff: the backoff
        ("3600", 8.0),  # at most max_backoff: a server cannot park the client for an hour
        ("soon", 0.1),  # unreadable: the backoff
        (email.utils.formatdate(time.time() + 3600, usegmt=True), 8.0),  # an HTTP-date, capped too
    ],
)
def test_retry_after_is_honoured_up_to_the_cap(sleeps, retry_after, waited, caplog):
    with ScriptedServer([_busy(retry_after)]) as server:
        client = EndpointClient(server.url, retries=2, backoff=0.1, max_backoff=8.0, timeout=5)
        with caplog.at_level(logging.WARNING, logger="auditkit.models.http_endpoint"):
            status, body = client.request("POST", b"{}")
    assert (status, body, server.requests) == (200, SCORES, 2)
    assert sleeps == [pytest.approx(waited, abs=0.01 if "GMT" in retry_after else 1e-9)]
    [record] = caplog.records
    assert record.getMessage().startswith(f"{server.url}: HTTP 503 'busy'; retrying in ") and record.getMessage().endswith(" s (attempt 2 of 3)")


def test_retries_are_counted_and_back_off_doubling(sleeps, caplog):
    with ScriptedServer([_busy(), _busy(status=502), _busy(status=429)]) as server:
        client = EndpointClient(server.url, retries=3, backoff=0.5, max_backoff=1.5, timeout=5)
        with caplog.at_level(logging.WARNING, logger="auditkit.models.http_endpoint"):
            status, _ = client.request("POST", b"{}", images=4)
    assert status == 200 and server.requests == 4
    assert sleeps == [0.5, 1.0, 1.5]  # backoff, doubling, capped at max_backoff
    stats = client.stats
    assert (stats.requests, stats.attempts, stats.retries, stats.reconnects, stats.images_sent) == (1, 4, 3, 0, 16)
    assert stats.statuses == {503: 1, 502: 1, 429: 1, 200: 1}
    assert [r.getMessage().rsplit("(", 1)[1] for r in caplog.records] == ["attempt 2 of 4)", "attempt 3 of 4)", "attempt 4 of 4)"]


def test_the_last_retryable_answer_is_returned_when_retries_run_out(sleeps):
    with ScriptedServer([_busy("1")] * 3) as server:
        client = EndpointClient(server.url, retries=2, backoff=0.0, timeout=5)
        status, body = client.request("POST", b"{}")
    assert (status, json.loads(body), server.requests) == (503, {"error": "busy"}, 3)
    assert sleeps == [1.0, 1.0] and (client.stats.requests, client.stats.retries) == (1, 2)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_client_errors_are_answered_once(sleeps, status):
    # 413 with Retry-After would be retried by urllib3 by default; a batch too large stays too large
    with ScriptedServer([_busy("1", status=status)]) as server:
        client = EndpointClient(server.url, retries=3, backoff=0.1, timeout=5)
        assert client.request("POST", b"{}")[0] == status
    assert server.requests == 1 and sleeps == []
    assert (client.stats.attempts, client.stats.retries, client.stats.statuses) == (1, 0, {status: 1})


def test_an_answer_over_the_size_limit_is_refused_without_retrying(sleeps):
    with ScriptedServer([(200, {}, b" " * (2 * 2**20))]) as server:
        client = EndpointClient(server.url, retries=3, backoff=0.1, timeout=5, max_response_bytes=2**20)
        with pytest.raises(EndpointError, match=r"the answer exceeds 1 MiB; expected scores or labels"):
            client.request("POST", b"{}")
        assert client.request("POST", b"{}") == (200, SCORES)  # on a fresh connection
    assert server.requests == 2 and sleeps == []


class SilentTLSServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word: a TLS client waits for the
    server's half of the handshake forever."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}/predict"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def __enter__(self) -> SilentTLSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_tls_handshake_that_never_completes_ends_at_the_attempt_deadline():
    with SilentTLSServer() as server:
        client = EndpointClient(server.url, timeout=0.3, retries=1, backoff=0.0)
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match=r"no answer after 2 attempt\(s\) with a 0.3 s timeout each \(last: timed out after 0.3 s\)"):
            client.request("GET")
        elapsed = time.monotonic() - t0
    assert len(server.accepted) == 2 and client.stats.attempts == 2
    assert 0.6 <= elapsed < 2.0, elapsed  # two attempts of 0.3 s, each ended at its deadline


def test_connecting_and_the_tls_handshake_share_one_deadline(monkeypatch):
    # A connection that takes 0.4 s leaves the handshake 0.2 s of the attempt's 0.6 s, not 0.6 s more
    connect = urllib3.connection.HTTPConnection._new_conn

    def slow_connect(self):
        time.sleep(0.4)
        return connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", slow_connect)
    with SilentTLSServer() as server:
        client = EndpointClient(server.url, timeout=0.6, retries=0)
        t0 = time.monotonic()
        with pytest.raises(EndpointError, match=r"no answer after 1 attempt\(s\) with a 0.6 s timeout each \(last: timed out"):
            client.request("GET")
        elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 0.9, elapsed


def test_a_failed_tls_handshake_is_one_clear_error_and_not_retried(sleeps):
    # an https:// URL on a plain-HTTP server: it answers the TLS hello with an HTTP 400
    with ScriptedServer([]) as server:
        client = EndpointClient(server.url.replace("http://", "https://"), retries=3, backoff=0.1, timeout=5)
        with pytest.raises(EndpointError) as info:
            client.request("GET")
    message = str(info.value)
    assert message.startswith(f"endpoint https://127.0.0.1:{server.httpd.server_address[1]}/predict: TLS failed: [SSL")
    assert "\n" not in message and client.stats.attempts == 1 and sleeps == []
