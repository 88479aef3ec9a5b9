"""The operator's own image, built as a user without Docker would (`image/build.sh`), cached
per source fingerprint in `.cache/operator-image/`, and pushed to the node's registry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import images

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "operator-image"
REPOSITORY = "modelyard/operator"
#: What the image is made of: the package, its metadata, and the build itself.
SOURCES = ("operator", "pyproject.toml", "README.md", "image/build.sh")
TOOLS = ("mmdebstrap", "umoci", "skopeo")


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


IMAGE = images.ScriptImage(CACHE, SOURCES, "image/build.sh", REPOSITORY, timeout=600)


def build() -> tuple[Path, str, float]:
    """The OCI layout holding the image, its tag, and the seconds building took (0: cached)."""
    require_tools()
    return IMAGE.build()


def push(layout: Path, tag: str, registry: str, credentials: tuple[str, str]) -> str:
    """Push to `registry`; the image reference the chart's `image.repository` takes."""
    return IMAGE.push(layout, tag, registry, credentials)


compressed_megabytes = images.compressed_megabytes
