"""The operator's own image, built as a user without Docker would (`image/build.sh`), cached
per source fingerprint in `.cache/operator-image/`, and pushed to the node's registry."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from support import images
from support.images import run

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "operator-image"
REPOSITORY = "modelyard/operator"
#: What the image is made of: the package, its metadata, and the build itself.
SOURCES = ("operator", "pyproject.toml", "README.md", "image/build.sh")
TOOLS = ("mmdebstrap", "umoci", "skopeo")


def fingerprint() -> str:
    digest = hashlib.sha256()
    for source in SOURCES:
        path = ROOT / source
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def require_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        message = f"building the operator image needs root and {', '.join(TOOLS)}" + (
            f" (missing: {', '.join(missing)}; apt-get install {' '.join(missing)})"
            if missing
            else ""
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def build() -> tuple[Path, str, float]:
    """The OCI layout holding the image, its tag, and the seconds building took (0: cached)."""
    require_tools()
    tag = fingerprint()
    directory = CACHE / tag
    layout = directory / "layout"
    if (directory / "complete").exists():
        return layout, tag, 0.0
    shutil.rmtree(CACHE, ignore_errors=True)  # one image at a time: each is ~70 MB
    directory.mkdir(parents=True)
    started = time.monotonic()
    run(str(ROOT / "image" / "build.sh"), str(layout), tag, cwd=ROOT)
    (directory / "complete").write_text("")
    return layout, tag, time.monotonic() - started


def push(layout: Path, tag: str, registry: str, credentials: tuple[str, str]) -> str:
    """Push to `registry`; the image reference the chart's `image.repository` takes."""
    images.push(layout, tag, registry, credentials, f"{REPOSITORY}:{tag}")
    return f"{registry}/{REPOSITORY}"


def compressed_megabytes(layout: Path) -> float:
    return sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file()) / 1e6
