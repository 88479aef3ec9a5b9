"""The probe's HTTP client against a real server on loopback that answers in pieces."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from modelyard.registry.endpoint import MAX_ANSWER, ModelEndpoint
from modelyard.registry.http import Endpoint


def serve(body: bytes, pieces: int) -> Iterator[str]:
    """An HTTP server that sends `body` in `pieces`, a pause between each (no Content-Length:
    the answer ends when the connection closes, as a streaming server's may)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *_: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            step = max(1, len(body) // pieces)
            for start in range(0, len(body), step):
                self.wfile.write(body[start : start + step])
                self.wfile.flush()
                time.sleep(0.05)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slow_large_answer() -> Iterator[str]:
    """A correct RERANKING answer of about 1 MB, sent in ten pieces."""
    answer = {"chunk_scores": [0.5] * 200_000}
    yield from serve(json.dumps(answer).encode(), pieces=10)


@pytest.fixture
def oversized_answer() -> Iterator[str]:
    yield from serve(b'{"chunk_scores": [' + b"0.5," * (MAX_ANSWER // 4) + b"0.5]}", pieces=4)


async def test_an_answer_sent_in_pieces_is_read_whole(slow_large_answer: str) -> None:
    async with ModelEndpoint(Endpoint(slow_large_answer, timeout=10)) as client:
        answer = await client.post("/predict", {"query": "q", "chunks": ["a"]})
    assert answer.not_json is None, answer.not_json
    assert len(answer.body["chunk_scores"]) == 200_000


async def test_an_answer_past_the_limit_says_so(oversized_answer: str) -> None:
    async with ModelEndpoint(Endpoint(oversized_answer, timeout=10)) as client:
        answer = await client.post("/predict", {"query": "q", "chunks": ["a"]})
    assert answer.body is None
    assert answer.not_json == "the answer is larger than 4 MiB, the most a probe reads"
