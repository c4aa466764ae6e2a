"""A real prediction endpoint for the tests: http.server in a thread on 127.0.0.1, speaking the
documented protocol (decoded here by hand, independently of the client), with switchable
misbehaviour: garbage, HTTP errors, hanging, dropping the connection."""
from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
import torch


@dataclass
class EndpointLog:
    """What the server saw: POST requests and the images in them, GETs, and the statuses
    it answered with."""

    posts: int = 0
    images: int = 0
    gets: int = 0
    statuses: list[int] = field(default_factory=list)


class PredictionServer:
    """Serves ``model`` (pixels in [0, 1] -> logits) at ``http://127.0.0.1:<port>/predict``.

    ``answer`` picks what a POST gets: ``"scores"`` (softmax rows), ``"logits"``, ``"labels"``,
    ``"garbage"`` (HTML), ``"hang"`` (no answer until the server stops), ``"error"`` (HTTP 500),
    ``"wrong_rows"`` (one row too few). ``script`` overrides it per request: a list of answers
    used in order, then ``answer`` again. ``metadata`` is served to GET (None: 404;
    ``"unsupported"``: http.server's 501, which closes the connection).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], answer: str = "scores", metadata: dict | str | None = None):
        self.model = model
        self.answer = answer
        self.script: list[str] = []
        self.metadata = metadata
        self.log = EndpointLog()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall between headers and body

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                with server.lock:
                    server.log.gets += 1
                if server.metadata == "unsupported":  # http.server's own 501, closing the connection
                    with server.lock:
                        server.log.statuses.append(501)
                    self.send_error(501)
                elif server.metadata is None:
                    self._send(404, b'{"error": "no metadata"}')
                else:
                    self._send(200, json.dumps(server.metadata).encode())

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = json.loads(body)
                shape = request["shape"]
                if request["encoding"] == "base64":
                    images = np.frombuffer(base64.b64decode(request["images"]), dtype="<f4").reshape(shape)
                else:
                    images = np.asarray(request["images"], dtype=np.float32)
                with server.lock:
                    server.log.posts += 1
                    server.log.images += int(shape[0])
                    answer = server.script.pop(0) if server.script else server.answer
                if answer == "hang":
                    server.stop_event.wait(30)
                    return
                if answer == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if answer == "garbage":
                    self._send(200, b"<html>Internal proxy page</html>", "text/html")
                    return
                if answer == "error":
                    self._send(500, b'{"error": "model crashed: CUDA error"}')
                    return
                if answer == "busy":
                    self._send(503, b'{"error": "busy"}', retry_after="0")
                    return
                with torch.no_grad():
                    logits = server.model(torch.from_numpy(images.copy())).double()
                if answer == "labels":
                    payload = {"labels": logits.argmax(1).tolist()}
                elif answer == "logits":
                    payload = {"scores": logits.tolist()}
                elif answer == "wrong_rows":
                    payload = {"scores": torch.softmax(logits, 1)[1:].tolist()}
                else:
                    payload = {"scores": torch.softmax(logits, 1).tolist()}
                self._send(200, json.dumps(payload).encode())

            def _send(self, status, body, content_type="application/json", retry_after=None):
                with server.lock:
                    server.log.statuses.append(status)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "PredictionServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
