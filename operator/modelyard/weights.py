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

#: Where a worker finds the signature: beside the files it covers, as `model_signing` writes it.
SIGNATURE_FILE = "model.sig"
#: The environment variable holding the trusted public keys (PEM, one after another): public,
#: so the pod spec may carry them, and a change of policy changes the pod and verifies again.
KEYS_VARIABLE = "MODELYARD_WEIGHTS_PUBLIC_KEYS"
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
