"""Model format ``http(s)://URL[#option=value&...]``: black-box targets behind an HTTP(S) endpoint speaking ``auditkit.predict/1`` (specified in
docs/black-box-targets.md): the protocol's messages, a client on urllib3 with deadlines,
retries and backoff, and :class:`HTTPTarget`."""
from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import logging
import math
import os
import socket
import ssl
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse
from urllib3.util import Retry, Timeout

from auditkit.errors import TargetError, UsageError
from auditkit.models.blackbox import SCORE_READINGS, scores_to_probabilities
from auditkit.models.format import ModelOptions, SpecOption, is_http_spec, model_format, split_options
from auditkit.target import BlackBoxTarget

log = logging.getLogger(__name__)

# POST <url> {"protocol", "shape": [B,3,H,W], "dtype": "float32", "encoding": "base64"|"list",
# "images"} -> {"scores": [[...K...], ...]} or {"labels": [...]}; optional GET <url> -> metadata
# {"protocol", "returns", "num_classes", "input_size", "max_batch"}. Pixels in [0, 1].
PROTOCOL = "auditkit.predict/1"
ENCODINGS = ("base64", "list")
#: Environment variable whose value, when set, is sent as the ``Authorization`` header.
AUTHORIZATION_ENV = "AUDITKIT_HTTP_AUTHORIZATION"
#: Statuses worth retrying: the server is busy, restarting or timed out, not refusing the request.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Statuses meaning "no metadata here" for the optional GET.
NO_METADATA_STATUSES = frozenset({404, 405, 501})
MAX_RESPONSE_BYTES = 64 * 2**20

HTTP_OPTIONS: dict[str, SpecOption] = {
    "timeout": SpecOption(float, "seconds one attempt (each retry its own) may take in all, TLS handshake included, default 10", minimum=0.001),
    "retries": SpecOption(int, "further attempts after a timeout, a dropped connection or a 408/429/5xx, default 3", minimum=0),
    "backoff": SpecOption(float, "seconds before the first retry, doubling each time, default 0.5", minimum=0.0),
    "batch_size": SpecOption(int, "images per request, default 32", minimum=1),
    "encoding": SpecOption(str, "how images are sent, default base64", choices=ENCODINGS),
    "returns": SpecOption(str, "what the endpoint answers; default: from its metadata or first answer", choices=("scores", "labels")),
    "scores": SpecOption(str, "whether score rows are probabilities or logits, default auto", choices=SCORE_READINGS),
}


class EndpointError(TargetError):
    """The endpoint could not be reached, timed out, or answered something outside the protocol."""


# -- the protocol ------------------------------------------------------------------------------


def encode_request(images: np.ndarray, encoding: str = "base64") -> bytes:
    """The JSON body of a prediction request for ``images`` (float [B,3,H,W] in [0, 1])."""
    array = np.ascontiguousarray(images, dtype="<f4")
    payload: dict[str, Any] = {"protocol": PROTOCOL, "shape": list(array.shape), "dtype": "float32", "encoding": encoding}
    if encoding == "base64":
        payload["images"] = base64.b64encode(array.tobytes()).decode("ascii")
    elif encoding == "list":
        payload["images"] = array.tolist()
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_request(body: bytes | str | Mapping[str, Any]) -> np.ndarray:
    """The images of a prediction request, float32 [B,3,H,W]: for servers written in Python.

    :raises ValueError: the body does not follow the protocol; the message says what is wrong.
    """
    payload = json.loads(body) if isinstance(body, (bytes, str)) else dict(body)
    if not isinstance(payload, dict) or "images" not in payload:
        raise ValueError("expected a JSON object with 'images' (and 'shape', 'encoding')")
    encoding = payload.get("encoding", "list")
    if encoding == "base64":
        shape = payload.get("shape")
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape)):
            raise ValueError(f"expected 'shape' as [B, C, H, W] positive integers, got {shape!r}")
        raw = base64.b64decode(payload["images"], validate=True)
        if len(raw) != 4 * math.prod(shape):
            raise ValueError(f"'images' holds {len(raw)} bytes; shape {shape} as float32 needs {4 * math.prod(shape)}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if encoding == "list":
        array = np.asarray(payload["images"], dtype=np.float32)
        if array.ndim != 4:
            raise ValueError(f"expected 'images' as nested lists [B][C][H][W], got {array.ndim} levels")
        return array
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def encode_response(*, scores: Any = None, labels: Any = None) -> bytes:
    """The JSON body of a prediction answer: ``scores`` [B,K] or ``labels`` [B]."""
    if (scores is None) == (labels is None):
        raise ValueError("give exactly one of scores or labels")
    if scores is not None:
        return json.dumps({"scores": np.asarray(scores, dtype=np.float64).tolist()}).encode()
    return json.dumps({"labels": [int(v) for v in np.asarray(labels).reshape(-1)]}).encode()


def decode_response(body: bytes, n_images: int, where: str) -> tuple[str, np.ndarray]:
    """Parse an answer for ``n_images`` images into ``("scores", float [B,K])`` or
    ``("labels", int64 [B])``.

    :raises EndpointError: not JSON, neither key, the wrong number of rows, ragged or
        non-numeric rows, non-finite scores, or labels that are not class indices.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EndpointError(
            f"{where} answered something that is not JSON ({_preview(body)}); "
            f'expected {{"scores": [[...], ...]}} or {{"labels": [...]}} ({PROTOCOL})'
        ) from None
    if not isinstance(payload, dict) or ("scores" in payload) == ("labels" in payload):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise EndpointError(f"{where} answered {keys}; expected a JSON object with exactly one of 'scores' or 'labels' ({PROTOCOL})")
    kind = "scores" if "scores" in payload else "labels"
    values = payload[kind]
    if not isinstance(values, list) or len(values) != n_images:
        got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
        raise EndpointError(f"{where} answered {got} of '{kind}' for {n_images} images; expected one per image, in order")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EndpointError(f"{where}: '{kind}' holds non-numbers or ragged rows; expected {'[B][K] numbers' if kind == 'scores' else '[B] integers'}") from None
    if kind == "scores":
        if array.ndim != 2 or array.shape[1] < 2:
            raise EndpointError(f"{where}: 'scores' has shape {list(array.shape)}; expected [{n_images}, classes >= 2]")
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).sum())
            raise EndpointError(f"{where}: 'scores' has NaN or infinite values in {bad} of {n_images} rows; expected finite numbers")
        return kind, array
    if array.ndim != 1 or not np.isfinite(array).all() or (array != np.round(array)).any() or (array < 0).any():
        raise EndpointError(f"{where}: 'labels' must be non-negative integer class indices, one per image; got {_preview(json.dumps(values).encode())}")
    return kind, array.astype(np.int64)


def _preview(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("..." if len(body) > limit else "")) if body else "an empty body"


# -- the client ----------------------------------------------------------------------------------


@dataclass
class EndpointStats:
    """What the client sent: requests answered, attempts made (every send, retries included),
    retries after a backoff, immediate resends after a kept-alive connection turned out closed,
    images sent over the wire (counted once per attempt), seconds spent waiting."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    reconnects: int = 0
    images_sent: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


class EndpointClient:
    """HTTP(S) client for one endpoint, on urllib3: one kept-alive connection, a deadline per
    attempt (connecting, the TLS handshake, sending and the whole answer), retries with
    exponential backoff on timeouts, dropped connections and 408/425/429/5xx (honouring
    ``Retry-After``), and no retry on other errors, which would fail the same way again.

    urllib3's :class:`~urllib3.util.Retry` decides what is retried and how long to wait; the
    loop in :meth:`request` is this client's own, because an answer's body is read under the
    attempt's deadline after urllib3 hands the response over, and a failure there is retried
    like any other.

    HTTP(S)_PROXY variables are not used: the connection goes straight to the endpoint.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"model {url!r}: expected an http:// or https:// URL with a host")
        try:
            self.port = parsed.port
        except ValueError:
            raise UsageError(f"model {url!r}: the port is not a number between 0 and 65535") from None
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise ValueError(f"timeout must be > 0, retries and backoff >= 0; got {timeout}, {retries}, {backoff}")
        self.url = url
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.path = urllib.parse.urlunsplit(("", "", parsed.path or "/", parsed.query, ""))
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_response_bytes = int(max_response_bytes)
        self.headers = {"Accept": "application/json", "User-Agent": "auditkit"}
        if os.environ.get(AUTHORIZATION_ENV):
            self.headers["Authorization"] = os.environ[AUTHORIZATION_ENV]
        self.headers.update(headers or {})
        self.stats = EndpointStats()
        self._attempt = _Attempt(self.timeout)
        self._pool: HTTPConnectionPool | None = None

    def _retry_policy(self) -> _EndpointRetry:
        # GET and POST: the protocol makes both safe to repeat. other=0: an error that is neither
        # in connecting nor in reading (TLS is refused before this) is not retried.
        return _EndpointRetry(
            total=self.retries,
            connect=None,
            read=None,
            other=0,
            allowed_methods=frozenset({"GET", "POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.backoff,
            backoff_max=self.max_backoff,
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self.close()

    def request(self, method: str, body: bytes | None = None, *, images: int = 0) -> tuple[int, bytes]:
        """Send one request, retrying as described; returns (status, body) of the final answer,
        which is a 2xx, a status not worth retrying, or the last retryable one.

        :raises EndpointError: every attempt timed out or lost its connection, TLS failed, or
            the answer was larger than ``max_response_bytes``.
        """
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        retry = self._retry_policy()
        t0 = time.monotonic()
        try:
            while True:
                self._attempt.start()
                self.stats.attempts += 1
                self.stats.images_sent += images
                try:
                    response = self._send(method, body, headers)
                    data = self._read(response)
                except HTTPError as exc:
                    if _dropped(exc) and not self._attempt.new_connection:
                        self.stats.reconnects += 1
                        continue  # most likely a kept-alive connection the server closed meanwhile: not a failure
                    if isinstance(exc, SSLError):
                        raise EndpointError(f"endpoint {self.url}: TLS failed: {_cause(exc)}") from exc
                    failure = _failure(exc, self.timeout)
                    try:
                        retry = retry.increment(method, self.url, error=exc)
                    except HTTPError:  # MaxRetryError, or the error itself where it is not to be retried
                        raise EndpointError(
                            f"endpoint {self.url}: no answer after {len(retry.history) + 1} attempt(s) with a "
                            f"{self.timeout:g} s timeout each (last: {failure}); check that the server is up, "
                            "or raise #timeout= / #retries="
                        ) from exc
                    response = None  # Retry-After belongs to answers
                else:
                    status = response.status
                    self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
                    if not retry.is_retry(method, status):
                        self.stats.requests += 1
                        return status, data
                    try:
                        retry = retry.increment(method, self.url, response=response)
                    except MaxRetryError:
                        self.stats.requests += 1
                        return status, data
                    failure = f"HTTP {status} {_error_text(data)}"
                self.stats.retries += 1
                log.warning(
                    "%s: %s; retrying in %.2g s (attempt %d of %d)",
                    self.url, failure, retry.delay(response), len(retry.history) + 1, self.retries + 1,
                )
                retry.sleep(response)
        finally:
            self.stats.seconds += time.monotonic() - t0

    def _send(self, method: str, body: bytes | None, headers: Mapping[str, str]) -> HTTPResponse:
        if self._pool is None:
            pool_class = _HTTPSPool if self.scheme == "https" else _HTTPPool
            self._pool = pool_class(
                self.host, self.port, timeout=Timeout(total=self.timeout), maxsize=1, block=False, attempt=self._attempt
            )
        # One attempt: the loop in request() retries. The body stays on the wire for _read, and
        # is taken as sent (no gzip bombs: the protocol's answers are plain JSON).
        return self._pool.urlopen(
            method, self.path, body=body, headers=headers, retries=False, redirect=False,
            preload_content=False, decode_content=False, enforce_content_length=True,
        )

    def _read(self, response: HTTPResponse) -> bytes:
        chunks, size = [], 0
        try:
            for chunk in response.stream(65536):
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise EndpointError(
                        f"endpoint {self.url}: the answer exceeds {self.max_response_bytes // 2**20} MiB; expected scores or labels"
                    )
                chunks.append(chunk)
        except BaseException:
            response.close()  # the rest of the answer is still on the wire: the connection cannot be kept
            raise
        finally:
            response.release_conn()
        return b"".join(chunks)


class _EndpointRetry(Retry):
    """urllib3's :class:`~urllib3.util.Retry` on this client's schedule: ``backoff_factor``
    seconds before the first retry (urllib3 retries the first time at once), doubling each
    time, at most ``backoff_max``; an answer's ``Retry-After``, in seconds (fractions too) or
    as an HTTP-date, is waited for when longer than that, up to ``backoff_max`` as well, so a
    server cannot park the client for hours."""

    def __init__(self, *args: Any, backoff_max: float = 8.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.backoff_max = backoff_max  # a constructor argument of urllib3 2 only; 1.26 has a class constant

    def new(self, **kw: Any) -> _EndpointRetry:
        return super().new(**{"backoff_max": self.backoff_max, **kw})

    def get_backoff_time(self) -> float:
        if not self.history:
            return 0.0
        return float(min(self.backoff_max, self.backoff_factor * 2 ** (len(self.history) - 1)))

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            seconds = float(retry_after)
        except ValueError:
            return super().parse_retry_after(retry_after)  # an HTTP-date, or InvalidHeader
        if not (math.isfinite(seconds) and seconds >= 0):
            raise InvalidHeader(f"Invalid Retry-After header: {retry_after}")
        return seconds

    def delay(self, response: HTTPResponse | None = None) -> float:
        """Seconds to wait before the next attempt, after ``response`` (None: after an error)."""
        delay = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            try:
                retry_after = self.get_retry_after(response)
            except InvalidHeader:
                retry_after = None  # unreadable: keep our own schedule
            if retry_after is not None:
                delay = min(self.backoff_max, max(delay, retry_after))
        return delay

    def sleep(self, response: HTTPResponse | None = None) -> None:
        time.sleep(self.delay(response))


class _Attempt:
    """The attempt under way: its deadline (a :func:`time.monotonic` time) and whether it opened
    a new connection or went out on a kept-alive one."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = math.inf
        self.new_connection = False

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds
        self.new_connection = False

    def time_left(self) -> float:
        # never 0, which would make a socket non-blocking rather than time out at once
        return max(self.deadline - time.monotonic(), 1e-3)


class _DeadlineConnection:
    """Mixed into urllib3's connections: every step of an attempt ends at its deadline.
    urllib3's timeouts bound each socket operation, not their sum, so a server dripping its
    answer a byte at a time would otherwise hold an attempt forever."""

    def __init__(self, *args: Any, attempt: _Attempt, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.attempt = attempt

    @property
    def response_class(self) -> Any:  # http.client builds the response from this, status line first
        return functools.partial(_DeadlineResponse, deadline=self.attempt.deadline)

    def _new_conn(self) -> socket.socket:
        self.attempt.new_connection = True
        self.timeout = self.attempt.time_left()
        sock = super()._new_conn()  # type: ignore[misc]
        # The TLS handshake that follows keeps to the socket's timeout as a whole (CPython's ssl
        # counts it down across the handshake), so it too ends at the deadline.
        sock.settimeout(self.attempt.time_left())
        return sock

    def send(self, data: Any) -> None:
        if self.sock is not None:  # type: ignore[attr-defined]
            self.sock.settimeout(self.attempt.time_left())  # type: ignore[attr-defined]  # sendall: in all
        super().send(data)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineConnection, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineReader(io.RawIOBase):
    """The reading end of a socket on which each read waits at most until ``deadline`` (a
    :func:`time.monotonic` time), then raises :class:`TimeoutError`. A socket's own timeout
    restarts with every byte received, so it alone does not bound an answer sent slowly."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the deadline passed")
        self._sock.settimeout(remaining)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response read through a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader http.client opened; the socket stays open
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _cause(error: BaseException) -> BaseException:
    """The socket, TLS or http.client error that urllib3 wrapped in ``error``."""
    while isinstance(error, HTTPError):
        inner = next((arg for arg in error.args if isinstance(arg, BaseException)), None)
        inner = inner or error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error


def _dropped(error: HTTPError) -> bool:
    """Whether the connection was closed under the request (a TLS one may end without saying so)."""
    return isinstance(error, (ProtocolError, SSLError)) and isinstance(_cause(error), (ConnectionError, ssl.SSLEOFError))


def _failure(error: HTTPError, timeout: float) -> str:
    """One attempt's failure in a few words, for the log and the final error."""
    cause = _cause(error)
    if isinstance(cause, TimeoutError) or (isinstance(error, (ReadTimeoutError, ConnectTimeoutError)) and not isinstance(error, NewConnectionError)):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ProtocolError):
        return f"connection lost ({type(cause).__name__})"
    return f"{type(cause).__name__}: {cause}"


def _error_text(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _preview(body, 200)
    if isinstance(payload, dict) and "error" in payload:
        return repr(str(payload["error"])[:200])
    return _preview(body, 200)


# -- the target ----------------------------------------------------------------------------------


class HTTPTarget(BlackBoxTarget):
    """A model behind an ``auditkit.predict/1`` endpoint, audited as a black box.

    Images go out in batches of at most ``batch_size`` (and the server's ``max_batch``);
    every image a check sends is counted in :attr:`queries`; :attr:`client` ``.stats``
    counts what went over the wire, retries included. Scores that are not probabilities
    (rows outside [0, 1] or not summing to 1) are taken as logits and softmaxed
    (``scores="auto"``; ``"probs"`` or ``"logits"`` force one reading).

    :param url: the endpoint.
    :param returns: ``"scores"`` or ``"labels"``; None learns it from the metadata or the
        first answer.
    :param timeout: seconds one attempt may take in all (connecting and the TLS handshake,
        sending, the whole answer).
    :param retries: further attempts after a timeout, a lost connection or a 408/425/429/5xx.
    :param backoff: seconds before the first retry; doubles each retry, at most 8 s.
    :param headers: extra request headers (``AUDITKIT_HTTP_AUTHORIZATION`` in the
        environment sets ``Authorization``).
    :param probe: send the metadata GET now, raising ``UsageError`` when the endpoint cannot
        be reached or rejects the client.
    """

    def __init__(
        self,
        url: str,
        *,
        returns: str | None = None,
        batch_size: int = 32,
        encoding: str = "base64",
        scores: str = "auto",
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        name: str = "target",
        role: str = "target",
        device: torch.device | str = "cpu",
        probe: bool = True,
    ):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if scores not in SCORE_READINGS:
            raise ValueError(f"scores must be one of {SCORE_READINGS}, got {scores!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client = EndpointClient(url, timeout=timeout, retries=retries, backoff=backoff, headers=headers)
        super().__init__(
            self._predict, returns=returns or "scores", name=name, role=role, spec=url, device=device,
            description=f"HTTP endpoint {url} ({PROTOCOL})",
        )
        self.url = url
        self.batch_size = int(batch_size)
        self.encoding = encoding
        self.scores_are = scores
        self._returns_known = returns is not None
        self.metadata: dict[str, Any] = {}
        if probe:
            self.metadata = self.fetch_metadata()

    def fetch_metadata(self) -> dict[str, Any]:
        """GET the endpoint's optional metadata and apply it (``returns``, ``num_classes``,
        ``input_size``, ``max_batch``). An endpoint without metadata (404/405/501, or a
        200 that is not the protocol's JSON) is fine: it is learned from the first answer.

        :raises UsageError: the endpoint cannot be reached, times out, rejects the client
            (401/403, other 4xx) or fails (5xx after retries), or its metadata is malformed.
        """
        where = f"model {self.url!r}"
        try:
            status, body = self.client.request("GET")
        except EndpointError as exc:
            raise UsageError(f"{where}: cannot reach the endpoint: {exc}") from exc
        if status in NO_METADATA_STATUSES:
            return {}
        if not 200 <= status < 300:
            raise UsageError(f"{where}: the endpoint answered GET with HTTP {status} {_error_text(body)}; expected 200 with metadata, or 404/405")
        try:
            meta = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.info("%s: GET answered 200 without JSON; no metadata", self.url)
            return {}
        if not isinstance(meta, dict) or "protocol" not in meta:
            return {}
        if meta["protocol"] != PROTOCOL:
            raise UsageError(f"{where}: the endpoint speaks {meta['protocol']!r}; this auditkit speaks {PROTOCOL!r}")
        returns = meta.get("returns")
        if returns is not None:
            if returns not in ("scores", "labels"):
                raise UsageError(f"{where}: metadata 'returns' is {returns!r}; expected 'scores' or 'labels'")
            if self._returns_known and returns != self.returns:
                raise UsageError(f"{where}: the endpoint returns {returns} but #returns={self.returns} was given")
            self.returns, self._returns_known = returns, True
        for key in ("num_classes", "max_batch"):
            value = meta.get(key)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise UsageError(f"{where}: metadata {key!r} is {value!r}; expected a positive integer")
        if meta.get("num_classes"):
            self.num_classes = int(meta["num_classes"])
        if meta.get("max_batch"):
            self.batch_size = min(self.batch_size, int(meta["max_batch"]))
        size = meta.get("input_size")
        if size is not None:
            if not (isinstance(size, list) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
                raise UsageError(f"{where}: metadata 'input_size' is {size!r}; expected [3, H, W]")
            self.input_size = tuple(size)
        return meta

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(images.shape[1:]) != tuple(self.input_size):
            raise TargetError(
                f"{self.name}: the endpoint takes images of shape {list(self.input_size)}, got {list(images.shape[1:])}"
            )
        array = images.detach().to("cpu", torch.float32).numpy()
        if array.shape[0] == 0:
            return torch.empty((0, self.num_classes or 0) if self.returns == "scores" else (0,), device=self.device)
        outputs = []
        for start in range(0, array.shape[0], self.batch_size):
            chunk = array[start : start + self.batch_size]
            outputs.append(self._predict_chunk(chunk))
        return torch.cat(outputs).to(self.device)

    def _predict_chunk(self, chunk: np.ndarray) -> torch.Tensor:
        where = f"endpoint {self.url}"
        status, body = self.client.request("POST", encode_request(chunk, self.encoding), images=chunk.shape[0])
        if not 200 <= status < 300:
            raise EndpointError(f"{where} answered HTTP {status} {_error_text(body)} to a batch of {chunk.shape[0]} images")
        kind, values = decode_response(body, chunk.shape[0], where)
        if not self._returns_known:
            self.returns, self._returns_known = kind, True
        elif kind != self.returns:
            raise EndpointError(f"{where} answered '{kind}' but it returns {self.returns}; expected the same kind in every answer")
        if kind == "labels":
            if self.num_classes is not None and int(values.max(initial=0)) >= self.num_classes:
                raise EndpointError(f"{where} answered label {int(values.max())}, but it has {self.num_classes} classes")
            return torch.from_numpy(values)
        if self.num_classes is not None and values.shape[1] != self.num_classes:
            raise EndpointError(f"{where} answered {values.shape[1]} scores per image, but it has {self.num_classes} classes")
        return scores_to_probabilities(torch.from_numpy(values).float(), self.scores_are)

    def close(self) -> None:
        """Close the connection (it reopens on the next query)."""
        self.client.close()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        stats = self.client.stats
        out["endpoint"] = {"url": self.url, "protocol": PROTOCOL, "requests": stats.requests, "retries": stats.retries, "images_sent": stats.images_sent}
        return out


def owns(spec: str) -> bool:
    return is_http_spec(spec)


def load(spec: str, options: ModelOptions) -> HTTPTarget:
    """The ``auditkit_load_model`` answer for ``http(s)://`` specs: ``URL[#option=value&...]``
    with the options of :data:`HTTP_OPTIONS`. Fetches the metadata now, so an unreachable
    endpoint is a usage error before any check runs.

    :raises UsageError: a malformed URL or option, or an endpoint that cannot be reached.
    """
    url, opts = split_options(spec, HTTP_OPTIONS)
    if getattr(options, "mean", None) or getattr(options, "std", None):
        warnings.warn(
            f"model {url!r}: --mean/--std are ignored for HTTP endpoints, which receive pixels in [0, 1] "
            "and normalize on their side",
            stacklevel=2,
        )
    target = HTTPTarget(url, device=getattr(options, "device", "cpu"), probe=False, **opts)
    target.spec = spec
    target.metadata = target.fetch_metadata()
    return target


auditkit_load_model = model_format(owns, load)
