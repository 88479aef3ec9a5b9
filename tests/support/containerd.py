"""containerd 2, built from its Go module at a pinned release and cached like the control plane
(`.cache/containerd/<version>/`): the real node's runtime.

Debian's containerd 1.6 cannot mount Kubernetes image volumes (GA since 1.36), the way model
weights reach a worker; containerd 2 can. The shim is built with it and pinned by path in the
node's configuration, so a Debian shim that happens to be on PATH is never the one started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.control_plane import ROOT

MODULE = "github.com/containerd/containerd/v2"
#: The release the node runs; `go install` checks it against the module's go.sum.
VERSION = "v2.4.2"
CACHE = ROOT / ".cache" / "containerd" / VERSION
COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")


def built() -> bool:
    return all((CACHE / command).exists() for command in COMMANDS)


def binaries(log: object = sys.stderr) -> Path:
    """The directory holding containerd, its runc shim and ctr, built now unless this release
    was built before (about 80 s cold on two cores)."""
    if built():
        return CACHE
    go = shutil.which("go")
    if go is None:
        message = "the real node runs containerd 2 built from its Go module and needs Go (1.26)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    partial = CACHE / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    print(f"building containerd {VERSION} into {CACHE}", file=log, flush=True)  # type: ignore[call-overload]
    started = time.monotonic()
    result = subprocess.run(
        [
            go,
            "install",
            "-trimpath",
            "-ldflags",
            f"-s -w -X {MODULE}/version.Version={VERSION}",
            *(f"{MODULE}/cmd/{command}@{VERSION}" for command in COMMANDS),
        ],
        # Static: no C toolchain needed, and no libc of the build machine to match.
        env={**os.environ, "GOBIN": str(partial), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building containerd {VERSION} failed:\n{result.stderr[-4000:]}")
    # Moved only when complete: an interrupted build never leaves a broken binary behind.
    for command in COMMANDS:
        (partial / command).rename(CACHE / command)
    print(f"built containerd in {time.monotonic() - started:.0f} s", file=log, flush=True)  # type: ignore[call-overload]
    return CACHE
