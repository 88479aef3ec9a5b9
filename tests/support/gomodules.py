"""Tools the tests build from their Go modules at a pinned release (`go install`, which checks
each module against its go.sum), cached under `.cache/<tool>/<version>/`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest


def install(
    what: str,
    packages: list[str],
    cache: Path,
    *,
    ldflags: str = "-s -w",
    env: dict[str, str] | None = None,
    log: object = sys.stderr,
) -> Path:
    """Build `packages` (module/cmd/name@version) into `cache`, unless every binary is there;
    `cache`. Without Go the test is skipped with the reason, and fails in CI."""
    names = [package.rsplit("/", 1)[-1].split("@", 1)[0] for package in packages]
    if all((cache / name).exists() for name in names):
        return cache
    go = shutil.which("go")
    if go is None:
        message = f"the tests build {what} from its Go module and need Go (1.26)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    partial = cache / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    print(f"building {what} into {cache}", file=log, flush=True)  # type: ignore[call-overload]
    started = time.monotonic()
    result = subprocess.run(
        [go, "install", "-trimpath", "-ldflags", ldflags, *packages],
        env={**os.environ, "GOBIN": str(partial), "GOFLAGS": "-mod=mod", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building {what} failed:\n{result.stderr[-4000:]}")
    # Moved only when complete: an interrupted build never leaves a broken binary behind.
    for name in names:
        (partial / name).rename(cache / name)
    print(f"built {what} in {time.monotonic() - started:.0f} s", file=log, flush=True)  # type: ignore[call-overload]
    return cache
