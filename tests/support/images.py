"""The images the real node runs, built here: no public registry is reachable from these machines.

`tests/images` holds two static Go programs, the model server and the pod sandbox's pause
process. Each becomes an OCI image of one file on an empty root (umoci), cached per source
fingerprint in `.cache/testimages/`; the model server is pushed (skopeo) to the session's local
registry, behind basic auth, so the pull Secret the operator writes is what containerd uses.
The pause image is imported into containerd instead: the sandbox image is pulled without
credentials.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "images"
CACHE = ROOT / ".cache" / "testimages"
#: Where the model server is pushed in the local registry.
MODEL_SERVER_REPOSITORY = "modelyard/model-server"


def run(*command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=300, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-3000:]}")
    return result.stdout.strip()


def fingerprint() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class Images:
    """The OCI layout holding both images (tags `model-server` and `pause`)."""

    layout: Path

    def digest(self, tag: str) -> str:
        return run("skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{self.layout}:{tag}")

    def pause_archive(self) -> Path:
        """The pause image as an archive `ctr images import` takes, named for containerd."""
        archive = self.layout.parent / "pause.tar"
        if not archive.exists():
            partial = archive.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            run(
                "skopeo",
                "copy",
                "--quiet",
                f"oci:{self.layout}:pause",
                f"docker-archive:{partial}:modelyard.test/pause:1",
            )
            partial.rename(archive)
        return archive

    def push_model_server(
        self,
        registry: str,
        credentials: tuple[str, str],
        tag: str,
        label: str | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Push the model server as `tag`; a `label` makes an image with another digest (a
        new version of the same server), whose `env` sets its behaviour (a version that
        answers off-contract, one that crashes). Returns the pushed digest."""
        source = "model-server"
        if label is not None:
            source = f"model-server-{label}"
            if source not in run("umoci", "ls", "--layout", str(self.layout)).split():
                run(
                    "umoci",
                    "config",
                    "--image",
                    f"{self.layout}:model-server",
                    "--tag",
                    source,
                    f"--config.label=org.modelyard.test.variant={label}",
                    *(f"--config.env={name}={value}" for name, value in (env or {}).items()),
                )
        push(self.layout, source, registry, credentials, f"{MODEL_SERVER_REPOSITORY}:{tag}")
        return self.digest(source)


def push(
    layout: Path, source: str, registry: str, credentials: tuple[str, str], destination: str
) -> None:
    """The image `source` of an OCI layout, to `registry`/`destination` (repository:tag)."""
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        f"--dest-creds={credentials[0]}:{credentials[1]}",
        f"oci:{layout}:{source}",
        f"docker://{registry}/{destination}",
    )


def build() -> Images:
    """Both images, built unless this source was built before."""
    directory = CACHE / fingerprint()
    layout = directory / "layout"
    if (layout / "index.json").exists() and (directory / "complete").exists():
        return Images(layout)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the node's images need Go to build tests/images")
    environment = {**os.environ, "CGO_ENABLED": "0"}
    run("umoci", "init", "--layout", str(layout))
    for program, user in (("model-server", "65534:65534"), ("pause", "65535:65535")):
        binary = directory / program
        package = "./modelserver" if program == "model-server" else "./pause"
        run(
            go,
            "build",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            str(binary),
            package,
            cwd=SOURCE,
            env=environment,
        )
        bundle = directory / f"bundle-{program}"
        run("umoci", "new", "--image", f"{layout}:{program}")
        run("umoci", "unpack", "--rootless", "--image", f"{layout}:{program}", str(bundle))
        target = bundle / "rootfs" / program
        shutil.copy(binary, target)
        target.chmod(0o755)
        run("umoci", "repack", "--image", f"{layout}:{program}", str(bundle))
        run(
            "umoci",
            "config",
            "--image",
            f"{layout}:{program}",
            f"--config.entrypoint=/{program}",
            f"--config.user={user}",
            "--config.workingdir=/",
        )
        shutil.rmtree(bundle)
    run("umoci", "gc", "--layout", str(layout))
    (directory / "complete").write_text("")
    return Images(layout)


@dataclass(frozen=True)
class ScriptImage:
    """An image a build script makes from sources in this checkout (the operator's, the real
    runtimes'), cached in `cache/<fingerprint of the sources>/`, one at a time (each is tens to
    hundreds of MB), and pushed to a registry as `repository:<fingerprint>`."""

    cache: Path
    sources: tuple[str, ...]
    script: str
    repository: str
    #: A cold build may fetch a Debian root and wheels: minutes.
    timeout: float = 1800

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for source in self.sources:
            path = ROOT / source
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if "__pycache__" in file.parts or file.suffix == ".pyc":
                    continue
                if any(part.endswith(".egg-info") for part in file.parts):
                    continue
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
        return digest.hexdigest()[:16]

    def build(self) -> tuple[Path, str, float]:
        """The OCI layout holding the image, its tag, and the seconds building took (0:
        cached). Needs root and the tools the script names."""
        tag = self.fingerprint()
        directory = self.cache / tag
        layout = directory / "layout"
        if (directory / "complete").exists():
            return layout, tag, 0.0
        shutil.rmtree(self.cache, ignore_errors=True)
        directory.mkdir(parents=True)
        started = time.monotonic()
        result = subprocess.run(
            [str(ROOT / self.script), str(layout), tag],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=self.timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.script} failed: {result.stderr.strip()[-3000:]}")
        (directory / "complete").write_text("")
        return layout, tag, time.monotonic() - started

    def push(self, layout: Path, tag: str, registry: str, credentials: tuple[str, str]) -> str:
        """Push to `registry` as repository:tag; the image reference without the tag."""
        push(layout, tag, registry, credentials, f"{self.repository}:{tag}")
        return f"{registry}/{self.repository}"


def compressed_megabytes(layout: Path) -> float:
    return sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file()) / 1e6
