"""A small client for an MLflow model registry's REST API (`/api/2.0/mlflow/...`).

Only what a Registry check, a ModelVersion's verification and `modelyard models` need: does the
server answer with these credentials, one version by number or by alias, the input columns of a
version's signature (its MLmodel file, through the server's proxied artifacts), and the
registered models with their versions. Over aiohttp like the OCI client, with the same failure
reasons (Unauthorized, Unreachable, TLSError) and the same rule: credentials never appear in an
error message, a log line or anything returned.

MLflow's own Python client is not used here: it pulls in a large dependency tree and is
synchronous, while the operator only needs a few GET requests on its event loop.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import yaml

from modelyard.registry.http import (
    MAX_BODY,
    Credentials,
    Failure,
    HttpClient,
    RegistryError,
    classify,
    transport,
)

API = "/api/2.0/mlflow"
#: The tracking server's proxied artifacts (`mlflow server --serve-artifacts`, the default):
#: `mlflow-artifacts:/<path>` is read at this prefix followed by the path.
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
#: An MLmodel file is a few KiB; a larger answer is not one, and is not read whole.
MLMODEL_LIMIT = 256 * 2**10
#: Inputs recorded of one signature; beyond, the rest is not (a probe then checks fewer).
MAX_INPUTS = 256
#: MLflow's answer for a registered model, version or alias that does not exist.
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
PAGE = 100


class Status:
    """MLflow's model-version status values."""

    READY = "READY"
    PENDING = "PENDING_REGISTRATION"
    FAILED = "FAILED_REGISTRATION"


@dataclass(frozen=True)
class RegisteredVersion:
    """One model version as MLflow describes it."""

    name: str
    version: str
    status: str
    run_id: str | None
    source: str | None
    created_time: str | None
    aliases: tuple[str, ...] = ()

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @classmethod
    def from_api(cls, payload: dict[str, Any]) -> RegisteredVersion:
        created = payload.get("creation_timestamp")
        return cls(
            name=str(payload.get("name", "")),
            version=str(payload.get("version", "")),
            status=str(payload.get("status") or Status.READY),
            run_id=payload.get("run_id") or None,
            source=payload.get("source") or None,
            created_time=_rfc3339(created) if created is not None else None,
            aliases=tuple(payload.get("aliases") or ()),
        )


@dataclass(frozen=True)
class SignatureInput:
    """One input column of a model's signature, as its MLmodel file declares it."""

    name: str
    type: str
    required: bool = True


class SignatureError(ValueError):
    """The MLmodel file is there but is not what MLflow writes."""


def signature_inputs(mlmodel: str) -> tuple[SignatureInput, ...]:
    """The named input columns of an MLmodel file's signature (`signature.inputs`, a JSON
    text); none when it has no signature, or one of tensors or unnamed columns (no column
    names to judge a sample by)."""
    try:
        document = yaml.safe_load(mlmodel)
    except yaml.YAMLError as error:
        raise SignatureError(f"the MLmodel file is not YAML ({type(error).__name__})") from None
    signature = document.get("signature") if isinstance(document, dict) else None
    text = signature.get("inputs") if isinstance(signature, dict) else None
    if not text:
        return ()
    try:
        columns = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        raise SignatureError("the MLmodel file's signature.inputs is not JSON") from None
    if not isinstance(columns, list):
        raise SignatureError("the MLmodel file's signature.inputs is not a list")
    found: list[SignatureInput] = []
    for column in columns:
        if not isinstance(column, dict) or column.get("type") == "tensor":
            return ()
        name = column.get("name")
        if not isinstance(name, str) or not name:
            return ()
        found.append(
            SignatureInput(name, str(column.get("type")), column.get("required", True) is not False)
        )
    return tuple(found[:MAX_INPUTS])


def proxied_path(artifact_uri: Any) -> str | None:
    """The path of an `mlflow-artifacts:/...` URI, which the tracking server itself serves;
    None for any other (s3://, gs://, a file path: storage the operator is given no access
    to) and for one naming another server."""
    if not isinstance(artifact_uri, str):
        return None
    parts = urlsplit(artifact_uri)
    if parts.scheme != "mlflow-artifacts" or parts.netloc or not parts.path.startswith("/"):
        return None
    return parts.path.rstrip("/")


#: Files pinned of one version at most: its manifest travels in its status and in its workers'
#: pod spec. Model directories hold a few files (shards at most a few hundred).
MAX_PINNED_FILES = 1000
#: Bounds on a version's listing: the directories listed, how deep, one answer's size, a path.
MAX_PINNED_DIRECTORIES = 200
MAX_DEPTH = 16
LISTING_LIMIT = 2**20
MAX_PATH = 512
#: The manifest's size in the worker's environment (one variable may hold 128 KiB on Linux).
MAX_MANIFEST = 96 * 2**10


@dataclass(frozen=True)
class PinnedFiles:
    """A version's files as the tracking server served them once: where it keeps them (the
    proxied artifacts' path) and each file's SHA-256, by its path under there."""

    path: str
    files: dict[str, str]
    size: int

    @property
    def digest(self) -> str:
        """One digest of them all: `sha256sum`'s lines of every file, sorted by path."""
        lines = "".join(f"{sha}  {name}\n" for name, sha in sorted(self.files.items()))
        return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def safe_relative(name: str) -> bool:
    """A path that stays under the directory it is joined to: no root, no `..`, no empty
    part. A listing that names anything else is not a model's files."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, str]
    versions: list[RegisteredVersion] = field(default_factory=list)


def _rfc3339(milliseconds: Any) -> str | None:
    try:
        moment = datetime.datetime.fromtimestamp(int(milliseconds) / 1000, tz=datetime.UTC)
    except (TypeError, ValueError, OverflowError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def authorization(credentials: Credentials) -> str | None:
    """The Authorization header MLflow takes: a bearer token, else basic auth, else none."""
    if credentials.token:
        return f"Bearer {credentials.token}"
    if credentials.anonymous:
        return None
    return credentials.basic()


@dataclass
class MlflowClient(HttpClient):
    """One MLflow server, one set of credentials; reuse it (it keeps its connections)."""

    #: Signatures read, by (model, version): a registered version's files do not change, and
    #: version numbers are never reused. Only definite answers are kept.
    _signatures: dict[tuple[str, str], tuple[SignatureInput, ...]] = field(
        default_factory=dict, repr=False
    )

    async def _read(
        self, path: str, query: dict[str, str], accept: str, limit: int = MAX_BODY
    ) -> bytes | None:
        """The answer's body; None when MLflow says the thing asked for does not exist."""
        url = self.endpoint.url.rstrip("/") + path
        if query:
            url += "?" + urlencode(query)
        headers = {"Accept": accept}
        header = authorization(self.credentials)
        if header:
            headers["Authorization"] = header
        with transport(self.endpoint):
            status, _, body = await self.fetch("GET", url, headers, limit)
        if status == 200:
            return body
        if status in (400, 404) and _error_code(body) in NOT_FOUND_CODES:
            return None
        raise classify(status, f"MLflow {path.removeprefix(API)}")

    async def _get(self, path: str, query: dict[str, str]) -> dict[str, Any] | None:
        """The answer's JSON; None when MLflow says the thing asked for does not exist."""
        body = await self._read(API + path, query, "application/json")
        if body is not None:
            try:
                payload = json.loads(body or b"{}")
            except (ValueError, RecursionError):
                raise RegistryError(
                    Failure.UNREACHABLE, f"{self.endpoint.host} answered {path} with no JSON"
                ) from None
            return payload if isinstance(payload, dict) else {}
        return None

    async def ping(self) -> None:
        """Reachable, TLS trusted, and the credentials accepted by the model registry."""
        await self._get("/registered-models/search", {"max_results": "1"})

    async def version(self, name: str, number: str) -> RegisteredVersion | None:
        payload = await self._get("/model-versions/get", {"name": name, "version": number})
        if payload is None or "model_version" not in payload:
            return None
        return RegisteredVersion.from_api(payload["model_version"])

    async def by_alias(self, name: str, alias: str) -> RegisteredVersion | None:
        payload = await self._get("/registered-models/alias", {"name": name, "alias": alias})
        if payload is None or "model_version" not in payload:
            return None
        return RegisteredVersion.from_api(payload["model_version"])

    async def signature(self, name: str, number: str) -> tuple[SignatureInput, ...]:
        """The input columns of the version's signature: where MLflow keeps its files
        (`model-versions/get-download-uri`), then their MLmodel file through the server's
        proxied artifacts. None found (no signature, files kept where the server does not
        serve them, a version gone) is empty; a failure raises RegistryError."""
        cached = self._signatures.get((name, number))
        if cached is not None:
            return cached
        located = await self._get(
            "/model-versions/get-download-uri", {"name": name, "version": number}
        )
        path = proxied_path((located or {}).get("artifact_uri"))
        if path is None:
            inputs: tuple[SignatureInput, ...] = ()
        else:
            body = await self._read(ARTIFACTS + quote(path) + "/MLmodel", {}, "*/*", MLMODEL_LIMIT)
            try:
                inputs = signature_inputs(body.decode("utf-8", "replace")) if body else ()
            except SignatureError as error:
                raise RegistryError(
                    Failure.UNREACHABLE, f"{name} version {number}: {error}"
                ) from None
        if located is not None:
            if len(self._signatures) >= 1024:
                self._signatures.pop(next(iter(self._signatures)))
            self._signatures[(name, number)] = inputs
        return inputs

    async def pin_files(self, name: str, number: str) -> PinnedFiles | None:
        """Every file of the version, hashed as the tracking server serves it now (streamed,
        never held): what its workers must load, byte for byte. None when the server does not
        serve the version's files (kept where only MLflow's own client reaches them: S3, GCS…
        with credentials the operator is not given) or the version is gone. The whole listing
        comes first, bounded (directories, entries, depth, each answer's size), so a server
        that lists without end costs a refusal, not the operator's memory; then the files are
        hashed. A failure, or a listing that is not a model's files, raises RegistryError."""
        located = await self._get(
            "/model-versions/get-download-uri", {"name": name, "version": number}
        )
        root = proxied_path((located or {}).get("artifact_uri"))
        if not root:
            return None
        names = await self._list_files(root, f"{name} version {number}")
        files: dict[str, str] = {}
        size = 0
        for relative in names:
            files[relative], length = await self._hash(root + "/" + relative)
            size += length
        return PinnedFiles(root, files, size)

    async def _list_files(self, root: str, what: str) -> list[str]:
        """The paths of every file under `root`, through the proxied artifacts' listing."""

        def refused(why: str) -> RegistryError:
            return RegistryError(Failure.UNREACHABLE, f"{what}: {why}")

        found: list[str] = []
        entries_seen = 0
        listed_directories = 0
        pending = [""]
        while pending:
            directory = pending.pop()
            listed_directories += 1
            if listed_directories > MAX_PINNED_DIRECTORIES:
                raise refused(f"more than {MAX_PINNED_DIRECTORIES} directories of files")
            body = await self._read(
                ARTIFACTS,
                {"path": (root + "/" + directory).strip("/")},
                "application/json",
                LISTING_LIMIT,
            )
            try:
                entries = (json.loads(body or b"{}") or {}).get("files") or []
            except (ValueError, AttributeError, RecursionError):
                raise refused("the tracking server's listing of its files is not JSON") from None
            if not isinstance(entries, list):
                raise refused("the tracking server's listing of its files is not a list")
            for entry in entries:
                entries_seen += 1
                if entries_seen > 2 * MAX_PINNED_FILES:
                    raise refused(f"more than {2 * MAX_PINNED_FILES} entries listed")
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                    raise refused("the tracking server listed an entry that is not a file")
                relative = f"{directory}/{entry['path']}".strip("/")
                if not safe_relative(relative) or len(relative) > MAX_PATH:
                    raise refused(
                        f"a file outside its directory, or too long a name: {relative[:100]!r}"
                    )
                if entry.get("is_dir"):
                    if relative.count("/") >= MAX_DEPTH:
                        raise refused(f"files deeper than {MAX_DEPTH} directories")
                    pending.append(relative)
                elif len(found) >= MAX_PINNED_FILES:
                    raise refused(
                        f"more than {MAX_PINNED_FILES} files; modelyard pins at most that many"
                    )
                else:
                    found.append(relative)
        if not found:
            # Not uploaded yet, or the wrong place: never pinned as a model of no files.
            raise refused("the tracking server lists no files for it")
        if sum(len(n) + 70 for n in found) > MAX_MANIFEST:
            raise refused("its files' names are too many to pin (the list travels in the pod spec)")
        return sorted(found)

    async def _hash(self, path: str) -> tuple[str, int]:
        url = self.endpoint.url.rstrip("/") + ARTIFACTS + quote(path)
        headers = {"Accept": "*/*"}
        header = authorization(self.credentials)
        if header:
            headers["Authorization"] = header
        with transport(self.endpoint):
            status, sha, length = await self.digest(url, headers)
        if status != 200:
            raise classify(status, f"MLflow artifact {path.rsplit('/', 1)[-1]}")
        return sha, length

    async def models(self) -> list[RegisteredModel]:
        """Every registered model, with its aliases and all its versions (newest first)."""
        found: list[RegisteredModel] = []
        token = ""
        while True:
            query = {"max_results": str(PAGE)}
            if token:
                query["page_token"] = token
            payload = await self._get("/registered-models/search", query) or {}
            for model in payload.get("registered_models") or []:
                aliases = {
                    str(a.get("alias")): str(a.get("version")) for a in model.get("aliases") or []
                }
                found.append(RegisteredModel(str(model.get("name")), aliases))
            token = payload.get("next_page_token") or ""
            if not token:
                break
        for model in found:
            model.versions.extend(await self.versions(model.name))
        return found

    async def versions(self, name: str) -> list[RegisteredVersion]:
        escaped = name.replace("'", "\\'")
        versions: list[RegisteredVersion] = []
        token = ""
        while True:
            query = {"filter": f"name='{escaped}'", "max_results": str(PAGE)}
            if token:
                query["page_token"] = token
            payload = await self._get("/model-versions/search", query) or {}
            versions.extend(
                RegisteredVersion.from_api(v) for v in payload.get("model_versions") or []
            )
            token = payload.get("next_page_token") or ""
            if not token:
                break
        return sorted(versions, key=lambda v: int(v.version or 0), reverse=True)


def _error_code(body: bytes) -> str | None:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None
    return payload.get("error_code") if isinstance(payload, dict) else None
