"""The real cosign, built from its Go module at a pinned version and cached like the control
plane (`.cache/cosign/<version>/cosign`), and a model owner's ways of signing with it.

Signing happens offline, as in an air-gapped registry: no transparency log and no TUF fetch
(`--tlog-upload=false` for the `.sig` tag format; an empty signing config and trusted root for
the Sigstore bundle format, which cosign 3 writes by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support import gomodules
from support.control_plane import ROOT

MODULE = "github.com/sigstore/cosign/v3"
#: The release the tests sign with; `go install` checks it against the module's go.sum.
VERSION = "v3.1.3"
CACHE = ROOT / ".cache" / "cosign" / VERSION


def binary(log: object = sys.stderr) -> Path:
    """cosign, built now unless this version was built before (about four minutes cold)."""
    built = gomodules.install(
        f"cosign {VERSION}", [f"{MODULE}/cmd/cosign@{VERSION}"], CACHE, log=log
    )
    return built / "cosign"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    ed25519: bool = False

    @property
    def public_pem(self) -> str:
        return self.public.read_text()


@dataclass
class Cosign:
    """cosign as a model owner runs it, with its own HOME so nothing touches the user's."""

    executable: Path
    home: Path

    def run(self, *args: str) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [str(self.executable), *args],
            cwd=self.home,
            env={
                **os.environ,
                "HOME": str(self.home),
                "COSIGN_PASSWORD": "",
                "TUF_ROOT": str(self.home / "tuf"),
            },
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(f"cosign {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def generate_key_pair(self, name: str) -> KeyPair:
        """ECDSA P-256, as `cosign generate-key-pair` writes it."""
        self.run("generate-key-pair", "--output-key-prefix", name)
        return KeyPair(self.home / f"{name}.key", self.home / f"{name}.pub")

    def import_ed25519(self, name: str) -> KeyPair:
        """An Ed25519 key made by openssl, imported as `cosign import-key-pair` does."""
        self.home.mkdir(parents=True, exist_ok=True)
        pem = self.home / f"{name}-openssl.pem"
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)],
            check=True,
            capture_output=True,
        )
        self.run("import-key-pair", "--key", str(pem), "--output-key-prefix", name)
        return KeyPair(self.home / f"{name}.key", self.home / f"{name}.pub", ed25519=True)

    def sign(
        self,
        key: KeyPair,
        image: str,
        *,
        bundle: bool,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        """Sign `image` (host/repository@digest) in one of cosign's two formats: the Sigstore
        bundle as an OCI referrer (`bundle`), or the `sha256-<hex>.sig` tag; `credentials`,
        the registry's username and password."""
        if bundle:
            signing_config = self.home / "signing-config.json"
            signing_config.write_text(
                '{"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json"}'
            )
            trusted_root = self.home / "trusted-root.json"
            trusted_root.write_text(
                '{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}'
            )
            flags = ["--signing-config", str(signing_config)]
            if not key.ed25519:
                # With a trusted root given, cosign 3.1 checks its own Ed25519 bundle as plain
                # Ed25519 after signing it with Ed25519ph, and refuses it ("accepted signatures
                # do not match threshold"). Without one it tries the public TUF repository
                # first, which fails at once offline, and goes on.
                flags += ["--trusted-root", str(trusted_root)]
        else:
            flags = [
                "--tlog-upload=false",
                "--new-bundle-format=false",
                "--use-signing-config=false",
            ]
        if credentials is not None:
            flags += [
                f"--registry-username={credentials[0]}",
                f"--registry-password={credentials[1]}",
            ]
        self.run("sign", "--key", str(key.private), "--allow-http-registry", "--yes", *flags, image)
