"""An MLflow version's files pinned by content, against tracking servers that misbehave.

The real MLflow server is tests/test_mlflow.py's; a server that lists without end, lists
nothing, redirects the worker's credentials elsewhere or sends more than was pinned is what no
real MLflow does on purpose, so a small HTTP server plays each one here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from modelyard import weights
from modelyard.reconcile.common import with_nulls
from modelyard.reconcile.version import _kept_pin
from modelyard.registry.http import Credentials, Endpoint, RegistryError
from modelyard.registry.mlflow import MAX_PINNED_DIRECTORIES, MlflowClient

Answer = Callable[[BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def serve(answer: Answer) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server on loopback answering every GET with `answer`; its URL and the requests'
    paths and Authorization headers as they came."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
            answer(self)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def tracking(listing: Callable[[str], list[dict[str, Any]]]) -> Answer:
    """A tracking server whose version's files are at mlflow-artifacts:/1/m, listed by
    `listing(path)`; every file holds b"weights"."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if "get-download-uri" in path:
            reply(handler, 200, json.dumps({"artifact_uri": "mlflow-artifacts:/1/m"}).encode())
        elif "/mlflow-artifacts/artifacts?" in path:
            listed = parse_qs(urlsplit(path).query).get("path", [""])[0]
            reply(handler, 200, json.dumps({"files": listing(listed)}).encode())
        else:
            reply(handler, 200, b"weights")

    return answer


async def pin(url: str) -> Any:
    async with MlflowClient(Endpoint(url, timeout=5), Credentials()) as client:
        return await client.pin_files("iris", "1")


async def test_a_listing_without_end_is_refused_before_any_file_is_fetched() -> None:
    """A directory that lists itself again and again (or a compromised server): the pin stops
    at its bound, having downloaded nothing, and the operator's memory is not the limit."""
    with serve(tracking(lambda _: [{"path": "d", "is_dir": True}])) as (url, seen):
        with pytest.raises(RegistryError, match=r"directories|deeper"):
            await pin(url)
        listings = [r for r in seen if "artifacts?" in r["path"]]
        assert len(listings) <= MAX_PINNED_DIRECTORIES
        assert not [r for r in seen if "/artifacts/1/" in r["path"]], "files fetched"


async def test_a_version_of_no_files_is_never_pinned() -> None:
    with serve(tracking(lambda _: [])) as (url, _), pytest.raises(RegistryError, match="no files"):
        await pin(url)


async def test_a_listing_with_a_way_out_of_the_directory_is_refused() -> None:
    escaping = tracking(lambda _: [{"path": "../../etc/passwd", "is_dir": False}])
    with serve(escaping) as (url, _), pytest.raises(RegistryError, match="outside its directory"):
        await pin(url)


async def test_files_are_hashed_as_the_server_sends_them() -> None:
    listing = {"1/m": [{"path": "MLmodel"}, {"path": "data", "is_dir": True}]}
    with serve(tracking(lambda p: listing.get(p, [{"path": "weights.bin"}]))) as (url, _):
        pinned = await pin(url)
    sha = hashlib.sha256(b"weights").hexdigest()
    assert pinned.files == {"MLmodel": sha, "data/weights.bin": sha}
    assert pinned.size == 2 * len(b"weights")


def environment(url: str, files: dict[str, str], size: int) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_TOKEN": "s3cr3t-token",
        weights.ARTIFACTS_VARIABLE: "/1/m",
        weights.PINNED_VARIABLE: json.dumps(files),
        weights.PINNED_BYTES_VARIABLE: str(size),
    }


def test_the_worker_never_follows_a_redirect_to_another_origin_with_its_credentials(
    tmp_path: Path,
) -> None:
    """An identity provider in front of MLflow, or an open redirect: the init step refuses to
    go there (exit 2, the check could not run), and the token never leaves the origin."""
    with serve(lambda h: reply(h, 200, b"weights")) as (elsewhere, taken):
        with serve(lambda h: reply(h, 302, b"", Location=f"{elsewhere}/login")) as (url, _):
            sha = hashlib.sha256(b"weights").hexdigest()
            code = weights.fetch_main(tmp_path, environment(url, {"model.bin": sha}, 7))
        assert code == 2
        assert not taken, f"followed to another origin: {taken}"


def test_the_worker_stops_writing_past_the_pinned_size(tmp_path: Path) -> None:
    """A server that sends more than the version's files were: refused (exit 3) before the
    node's disk is the limit."""
    with serve(lambda h: reply(h, 200, b"x" * 4096)) as (url, _):
        code = weights.fetch_main(tmp_path / "w", environment(url, {"model.bin": "0" * 64}, 1024))
    assert code == weights.REFUSED
    assert (tmp_path / "w" / "model.bin").stat().st_size <= 1024


def test_a_pin_is_kept_only_for_the_very_version_it_was_made_of() -> None:
    """A registered model deleted and made again numbers its versions from 1 again: the files
    pinned of the old version 1 are not the new one's."""
    pinned = {"version": "1", "runId": "r1", "source": "models:/m-1", "files": {"digest": "d"}}
    assert _kept_pin({**pinned, "files": None}, pinned) == {"files": {"digest": "d"}}
    again = {"version": "1", "runId": "r2", "source": "models:/m-2"}
    assert _kept_pin(again, pinned) is None


def test_a_version_status_replaces_its_pinned_files_whole() -> None:
    """The ModelVersion's status is a merge patch: files pinned of another run, or a problem
    since solved, are sent as null, never merged key by key into the new pin."""
    before = {
        "version": "1",
        "files": {"artifacts": "/1/A", "sha256": {"MLmodel": "a", "model.pkl": "b"}},
        "filesProblem": "timed out",
    }
    after = {"version": "1", "files": {"artifacts": "/1/B", "sha256": {"MLmodel": "c"}}}
    patch = with_nulls(before, after)
    assert patch["files"]["sha256"] == {"MLmodel": "c", "model.pkl": None}
    assert patch["filesProblem"] is None
