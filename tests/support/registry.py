"""A real OCI registry on loopback (Debian's docker-registry), with images built by umoci and
pushed by skopeo — no Docker needed.

`.ci/run` installs the tools, so in CI these tests run; elsewhere they skip with a message, and
under CI=true a missing tool is a failure, never a silent skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from support.control_plane import die_with_parent

TOOLS = ("docker-registry", "skopeo", "umoci", "htpasswd", "openssl")


def require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    message = (
        f"registry tests need {', '.join(missing)} "
        "(apt-get install docker-registry skopeo umoci apache2-utils openssl)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*command: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def self_signed(cert: Path, key: Path, name: str) -> None:
    """A self-signed certificate for localhost and 127.0.0.1, made once (its own CA)."""
    if cert.exists():
        return
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout",
        str(key),
        "-out",
        str(cert),
    )


@dataclass
class LocalRegistry:
    """One registry process; `tls` and `auth` make it behave like quay.io or Harbor."""

    directory: Path
    tls: bool = False
    auth: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: Where the registry's access log goes (every request, one line each), if anywhere.
    access_log: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_pem(self) -> str:
        return (self.directory / "certs" / "ca.crt").read_text()

    def _configure(self) -> Path:
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": self.access_log is None}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host},
        }
        if self.tls:
            # skopeo reads certs/ and takes any *.key there for a client key: the server's key
            # lives apart.
            certs, private = self.directory / "certs", self.directory / "private"
            certs.mkdir(exist_ok=True)
            private.mkdir(exist_ok=True)
            self_signed(certs / "ca.crt", private / "tls.key", "modelyard-test-registry")
            config["http"] = {
                "addr": self.host,
                "tls": {"certificate": str(certs / "ca.crt"), "key": str(private / "tls.key")},
            }
        if self.auth:
            htpasswd = self.directory / "htpasswd"
            run("htpasswd", "-Bbc", str(htpasswd), *self.auth)
            config["auth"] = {"htpasswd": {"realm": "modelyard-test", "path": str(htpasswd)}}
        path = self.directory / "config.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def start(self) -> LocalRegistry:
        config = self._configure()
        with contextlib.ExitStack() as files:
            log = (
                files.enter_context(self.access_log.open("ab"))
                if self.access_log is not None
                else subprocess.DEVNULL
            )
            self.process = subprocess.Popen(
                die_with_parent(["docker-registry", "serve", str(config)]),
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        context = ssl.create_default_context(cadata=self.ca_pem) if self.tls else None
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=context)
                return self
            except urllib.error.HTTPError:
                return self  # 401 with auth: it answers
            except (urllib.error.URLError, ConnectionError, OSError):
                await asyncio.sleep(0.05)
        raise RuntimeError(f"registry on {self.url} did not start")

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
        self.process = None

    def fetches(self, fragment: str) -> list[str]:
        """The access log's GET requests whose line holds `fragment`."""
        if self.access_log is None or not self.access_log.exists():
            return []
        lines = self.access_log.read_text(errors="replace").splitlines()
        return [line for line in lines if fragment in line and '"GET ' in line]

    def skopeo_destination(self) -> list[str]:
        flags = []
        if self.tls:
            flags.append(f"--dest-cert-dir={self.directory / 'certs'}")
        else:
            flags.append("--dest-tls-verify=false")
        if self.auth:
            flags.append(f"--dest-creds={self.auth[0]}:{self.auth[1]}")
        return flags

    def push(self, repository: str, tag: str, content: str) -> str:
        """Build a one-file image whose bytes depend on `content`, push it; its digest."""
        layout = self.directory / "layouts" / repository.replace("/", "_")
        layout.parent.mkdir(parents=True, exist_ok=True)
        if not layout.exists():
            run("umoci", "init", "--layout", str(layout))
            run("umoci", "new", "--image", f"{layout}:base")
        bundle = self.directory / "bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        run("umoci", "unpack", "--rootless", "--image", f"{layout}:base", str(bundle))
        (bundle / "rootfs" / "model.txt").write_text(content)
        run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
        return self.push_layout(layout, tag, repository)

    def push_layout(self, layout: Path, tag: str, repository: str) -> str:
        """Push `layout`'s image `tag` as repository:tag (skopeo); its digest."""
        run(
            "skopeo",
            "copy",
            "--quiet",
            *self.skopeo_destination(),
            f"oci:{layout}:{tag}",
            f"docker://{self.host}/{repository}:{tag}",
        )
        return run("skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{layout}:{tag}").strip()
