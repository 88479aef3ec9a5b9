"""A real HTTP model server on loopback, whose behaviour a test changes while it runs.

It speaks the RERANKING contract when it behaves (one score per chunk), and can be told to
answer the wrong shape, to answer slower than a probe waits, to fail with 500, or to demand a
token. Every request it receives is recorded, so a test can see what the operator sent. It is a
`ThreadingHTTPServer` in a thread of the test process: a real socket, real HTTP, no mock.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.operator_process import free_port
from support.registry import self_signed


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Behaviour:
    #: "conforming", "wrong-shape", "error" (500) or "not-json"; to an image classifier's
    #: request also "failed" (status: failed) or "unregistered-label" (a label no one registered).
    answer: str = "conforming"
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: When set, requests without `Authorization: Bearer <token>` get 401.
    token: str | None = None
    #: When set, the token is expected in this header instead, without a scheme.
    token_header: str | None = None
    #: When set, every request is answered 307 with this base URL (plus the path) as Location.
    redirect_to: str | None = None
    #: What GET .../api/classes answers: an image classifier's classes.
    classes: Any = field(default_factory=lambda: ["cat", "dog", "bird", "fish"])


@dataclass
class ModelServer:
    """`start()` it (it may start late: the port is chosen up front); `stop()` it."""

    port: int = field(default_factory=free_port)
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    #: Serve HTTPS with a self-signed certificate (for localhost and 127.0.0.1) made here.
    tls_directory: Path | None = None
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_directory else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_pem(self) -> str:
        assert self.tls_directory is not None
        return (self.tls_directory / "tls.crt").read_text()

    def _certificate(self) -> tuple[Path, Path]:
        assert self.tls_directory is not None
        cert, key = self.tls_directory / "tls.crt", self.tls_directory / "tls.key"
        self_signed(cert, key, "modelyard-test-model")
        return cert, key

    def start(self) -> ModelServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                server._handle(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls_directory is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._certificate())
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        wanted = self.behaviour.token
        if wanted is None:
            return True
        if self.behaviour.token_header:
            return handler.headers.get(self.behaviour.token_header) == wanted
        return handler.headers.get("Authorization") == f"Bearer {wanted}"

    def _handle(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        self.received.append(
            Received(handler.command, handler.path, dict(handler.headers.items()), body)
        )
        behaviour = self.behaviour
        if behaviour.delay:
            time.sleep(behaviour.delay)
        if behaviour.redirect_to is not None:
            handler.send_response(307)
            handler.send_header("Location", behaviour.redirect_to + handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif not self._authorized(handler):
            self._send(handler, 401, {"detail": "missing or wrong token"})
        elif handler.command == "GET" and handler.path.endswith("/api/classes"):
            self._send(handler, 200, behaviour.classes)
        elif handler.command == "GET":
            self._send(handler, 200, {"status": "ok"})
        elif behaviour.answer == "error":
            self._send(handler, 500, {"detail": "CUDA out of memory"})
        elif behaviour.answer == "not-json":
            self._send(handler, 200, "<html>maintenance</html>")
        elif behaviour.answer == "wrong-shape":
            self._send(handler, 200, {"scores": [0.1, 0.9]})
        elif isinstance(body, dict) and "image" in body:
            self._send(handler, 200, self._classified(behaviour.answer))
        else:
            chunks = (body or {}).get("chunks") or [] if isinstance(body, dict) else []
            scores = [round(1.0 / (1 + i), 3) for i in range(len(chunks))]
            self._send(handler, 200, {"chunk_scores": scores, "tokens_used": 42})

    @staticmethod
    def _classified(answer: str) -> dict[str, Any]:
        """The annotation tool's "bring your own model" answer (POST /api/infer)."""
        if answer == "failed":
            return {"status": "failed", "results": [], "message": "the image could not be decoded"}
        label = "zebra" if answer == "unregistered-label" else "cat"
        result = {"name": "object-1", "label": label, "confidence": 0.93, "tag": {"box": [1, 2]}}
        return {"status": "succeeded", "results": [result]}

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", "text/html" if isinstance(payload, str) else "application/json"
            )
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a probe's timeout): nothing to answer

    def posts(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST"]
