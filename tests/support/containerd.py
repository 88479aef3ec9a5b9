"""containerd 2, built from its Go module at a pinned release and cached like the control plane
(`.cache/containerd/<version>/`): the real node's runtime.

Debian's containerd 1.6 cannot mount Kubernetes image volumes (GA since 1.36), the way model
weights reach a worker; containerd 2 can. The shim is built with it and pinned by path in the
node's configuration, so a Debian shim that happens to be on PATH is never the one started.
"""

from __future__ import annotations

import sys
from pathlib import Path

from support import gomodules
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
    was built before (about 100 s cold on two cores)."""
    return gomodules.install(
        f"containerd {VERSION}",
        [f"{MODULE}/cmd/{command}@{VERSION}" for command in COMMANDS],
        CACHE,
        ldflags=f"-s -w -X {MODULE}/version.Version={VERSION}",
        # Static: no C toolchain needed, and no libc of the build machine to match.
        env={"CGO_ENABLED": "0"},
        log=log,
    )
