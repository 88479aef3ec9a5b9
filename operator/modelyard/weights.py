"""The init step of a worker whose weights must be signed: do the files the node mounted hash
to the manifest their publisher signed?

The operator verifies the weights' digest and its cosign signature against the registry, but
what the runtime loads is the files on the node. This step runs in the pod, before the runtime,
over the mounted files themselves: it checks the OpenSSF model-signing signature (`model.sig`
beside the files, a Sigstore bundle whose statement lists every file's SHA-256) with the
Registry's public keys, with the `model-signing` package. A tampered, missing or extra file
fails it, so the runtime never starts on them; the reason goes to the container's termination
message, which the Model's status quotes.
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Where a worker finds the signature: beside the files it covers, as `model_signing` writes it.
SIGNATURE_FILE = "model.sig"
#: The environment variable holding the trusted public keys (PEM, one after another): public,
#: so the pod spec may carry them, and a change of policy changes the pod and verifies again.
KEYS_VARIABLE = "MODELYARD_WEIGHTS_PUBLIC_KEYS"
#: A version from MLflow: where the tracking server keeps its files (its proxied artifacts'
#: path), and their SHA-256 pinned at verification (JSON: path → hex).
ARTIFACTS_VARIABLE = "MODELYARD_MLFLOW_ARTIFACTS"
PINNED_VARIABLE = "MODELYARD_PINNED_FILES"
#: Their size in all, as pinned: more than that is not the version's files, and is not written.
PINNED_BYTES_VARIABLE = "MODELYARD_PINNED_BYTES"
#: The init container that runs this step, named so the Model's status can quote its refusal.
VERIFIER_CONTAINER = "verify-weights"
#: The kubelet keeps at most 4096 bytes of a termination message.
MAX_MESSAGE = 4000
#: The exit code that means "these files are not what was signed"; any other failure means
#: the check itself could not run, which the Model says differently.
REFUSED = 3


def split_keys(text: str) -> list[str]:
    """The PEM blocks of `text`, each whole."""
    keys: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("-----BEGIN "):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith("-----END "):
                keys.append("\n".join(current) + "\n")
                current = []
    return keys


class CannotCheck(Exception):  # noqa: N818 -- a verdict, said as such
    """The check could not be made (as opposed to the files failing it)."""


def readable(message: str) -> str:
    """model_signing's refusal with file names instead of digests' raw bytes."""
    changed = re.findall(r"Hash mismatch for \\?'(.+?)\\?':", message)
    if not changed:
        return message
    others = re.findall(r"((?:Missing|Extra) files [^:]*: [^\"'\]]+)", message)
    return "; ".join([f"changed since signed: {', '.join(changed)}", *others])


def problem_with(files: Path, public_keys: list[str]) -> str | None:
    """Why the files under `files` are not what one of `public_keys` signed, or None."""
    signature = files / SIGNATURE_FILE
    if not signature.is_file():
        return (
            f"{files} holds no {SIGNATURE_FILE}: the Registry's policy asks for weights signed "
            "with model-signing (`model_signing sign key DIR --private_key KEY --signature "
            f"DIR/{SIGNATURE_FILE}`), the signature pushed beside the files"
        )
    if not public_keys:
        raise CannotCheck("no public key to verify the weights with")
    # Imported here: only this step needs it, and the operator's process never loads it.
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415
    from model_signing import verifying  # noqa: PLC0415

    refusals: list[str] = []
    # /tmp: the worker's init container mounts a memory volume there (its root is read-only).
    with tempfile.TemporaryDirectory() as scratch:
        for index, pem in enumerate(public_keys):
            key = Path(scratch) / f"key-{index}.pub"
            key.write_text(pem)
            try:
                checker = verifying.Config()  # type: ignore[no-untyped-call]
                checker.use_elliptic_key_verifier(public_key=key).verify(files, signature)
            except (ValueError, InvalidSignature) as error:
                # What model-signing raises for files unlike the manifest or a signature not
                # made by this key. Anything else (a file unreadable to this user, no memory)
                # means the check could not run, and goes up as such.
                refusals.append(f"key {index + 1}: {readable(str(error))}")
                continue
            return None
    return "the files do not match their signature: " + "; ".join(refusals)


def main(files: Path, keys_text: str) -> int:
    """Exit 0 when the weights verify, REFUSED when they do not, 2 when the check could not
    run; the reason on stderr and in the termination message."""
    try:
        problem = problem_with(files, split_keys(keys_text))
    except Exception as error:  # the check could not run: said as such, not as tampering
        return _say(f"the check could not run: {type(error).__name__}: {error}", 2)
    if problem is None:
        print(f"{files}: every file matches the signed manifest", file=sys.stderr)
        return 0
    return _say(problem, REFUSED)


def _opener(insecure: bool) -> Any:
    """urllib as the tracking server needs it, and redirects followed only where the
    credentials were given for: urllib would send them to any host a redirect names (an
    identity provider in front of MLflow, an open redirect) and down from https to http."""
    import ssl  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    class SameOrigin(urllib.request.HTTPRedirectHandler):
        def redirect_request(  # noqa: PLR0917 -- urllib's own signature
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Any:
            before, after = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
            if _origin(before) != _origin(after):
                raise CannotCheck(
                    f"the tracking server redirected to another origin ({after.scheme}://"
                    f"{after.hostname}): the credentials are not sent there"
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    context = ssl.create_default_context()
    if insecure:  # the Registry says so (tls.insecureSkipVerify), as MLflow's own client reads it
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), SameOrigin())


def _origin(url: Any) -> tuple[str, str, int]:
    """Scheme, host and port, the port spelt out or not (`host` is `host:443` over https)."""
    default = 443 if url.scheme == "https" else 80
    return url.scheme, (url.hostname or "").lower(), url.port or default


def _authorization(environment: dict[str, str]) -> str | None:
    """The Authorization MLflow takes, from the variables MLflow's own client reads."""
    import base64  # noqa: PLC0415

    token = environment.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    user = environment.get("MLFLOW_TRACKING_USERNAME")
    if user:
        pair = f"{user}:{environment.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        return "Basic " + base64.b64encode(pair).decode()
    return None


class _TooMuch(Exception):  # noqa: N818 -- a verdict
    """The tracking server sent more bytes than were pinned."""


def _fetch_one(opener: Any, request: Any, destination: Path, budget: int) -> tuple[str, int]:
    """One file written to `destination` as it arrives: its SHA-256 and size. At most
    `budget` bytes are written (`_TooMuch` past them)."""
    import hashlib  # noqa: PLC0415

    hashed = hashlib.sha256()
    size = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    with opener.open(request, timeout=60) as answer, destination.open("wb") as out:
        while chunk := answer.read(2**20):
            size += len(chunk)
            if size > budget:
                raise _TooMuch
            hashed.update(chunk)
            out.write(chunk)
    return hashed.hexdigest(), size


def _pinned_of(environment: dict[str, str]) -> tuple[str, str, dict[str, str], int]:
    """The tracking server, the files' place there, their SHA-256 by path, their bytes."""
    import json  # noqa: PLC0415

    server = environment.get("MLFLOW_TRACKING_URI", "").rstrip("/")
    root = environment.get(ARTIFACTS_VARIABLE, "")
    try:
        pinned = json.loads(environment.get(PINNED_VARIABLE, ""))
        allowed = int(environment.get(PINNED_BYTES_VARIABLE, ""))
    except ValueError:
        raise CannotCheck(f"${PINNED_VARIABLE} or ${PINNED_BYTES_VARIABLE} is malformed") from None
    if not server or not root or not isinstance(pinned, dict) or not pinned:
        raise CannotCheck("no tracking server, artifacts path or pinned files to fetch")
    for name in pinned:
        parts = str(name).split("/")
        if str(name).startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise CannotCheck(f"a pinned file outside the weights path: {name!r}")
    return server, root, {str(k): str(v) for k, v in pinned.items()}, allowed


def fetch_problem(target: Path, environment: dict[str, str]) -> str | None:
    """Fetch a version's pinned files from the tracking server's proxied artifacts into
    `target`, hashing each as it is written: why they are not what was pinned, or None.
    Raises CannotCheck when they could not be fetched at all."""
    import urllib.error  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    server, root, pinned, allowed = _pinned_of(environment)
    opener = _opener(environment.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true")
    header = _authorization(environment)
    changed: list[str] = []
    missing: list[str] = []
    for name, expected in sorted(pinned.items()):
        url = f"{server}/api/2.0/mlflow-artifacts/artifacts{urllib.parse.quote(root)}/"
        request = urllib.request.Request(url + urllib.parse.quote(name))
        if header:
            request.add_header("Authorization", header)
        try:
            sha, size = _fetch_one(opener, request, target / name, allowed)
        except _TooMuch:
            return (
                f"the tracking server sent more than the {allowed} bytes pinned (at {name}): "
                "not the version's files"
            )
        except urllib.error.HTTPError as error:
            if error.code == 404:
                missing.append(name)
                continue
            raise CannotCheck(f"the tracking server answered {error.code} for {name}") from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise CannotCheck(f"cannot fetch {name}: {error}") from None
        allowed -= size
        if sha != expected:
            changed.append(name)
    said = []
    if changed:
        said.append(f"changed since pinned: {', '.join(changed)}")
    if missing:
        said.append(f"missing since pinned: {', '.join(missing)}")
    if not said:
        return None
    return "the tracking server's files are not the version's pinned ones: " + "; ".join(said)


def fetch_main(target: Path, environment: dict[str, str]) -> int:
    """Exit 0 when every pinned file was fetched as pinned, REFUSED when one differs or is
    gone, 2 when they could not be fetched; the reason on stderr and in the termination
    message (never the credentials: only file names and status codes are said)."""
    try:
        problem = fetch_problem(target, environment)
    except CannotCheck as error:
        return _say(f"the files could not be fetched: {error}", 2)
    if problem is None:
        count = len(list(p for p in target.rglob("*") if p.is_file()))
        print(f"{target}: {count} files fetched, each as pinned", file=sys.stderr)
        return 0
    return _say(problem, REFUSED)


def present(files: Path) -> int:
    """A warming pod's step: the kubelet pulled and mounted the weights before it started, so
    all that is left is to say what is there. An empty mount is what an image the node cannot
    unpack into files looks like (the operator refuses those before any pod): exit REFUSED."""
    count = size = 0
    for path in files.rglob("*"):
        if path.is_file():
            count += 1
            size += path.stat().st_size
    if count == 0:
        return _say(f"{files} is empty: the node mounted no files of these weights", REFUSED)
    print(f"{files}: {count} files, {size} bytes on the node", file=sys.stderr)
    return 0


def _say(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    with contextlib.suppress(OSError):  # not in a container
        Path("/dev/termination-log").write_text(message[:MAX_MESSAGE])
    return code
