"""Programs some tests need from Debian packages (`.ci/run` installs them): missing here, those
tests skip with the package to install; missing in CI, they fail."""

from __future__ import annotations

import os
import shutil

import pytest


def required(program: str, package: str) -> str:
    found = shutil.which(program)
    if found is None:
        message = f"{program} is missing (apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
