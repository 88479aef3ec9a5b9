"""Where the bench reads and writes, and the libraries it keeps out of the project's environment.

Benchmarks compare against clients and frameworks the operator does not depend on; installed
into the project's virtual environment they would be imported by processes that never asked for
them (kopf imports the official client whenever it is present) and skew their memory, so they
go into a folder of their own under .cache, put on PYTHONPATH only for the process that uses it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def install_apart(target: Path, marker: str, requirements: list[str]) -> Path:
    """`requirements` installed into `target` once (`marker`, a top-level name, says whether
    they are there already); the folder, for PYTHONPATH."""
    if not (target / marker).exists():
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet"),
                *("--target", str(target), *requirements),
            ],
            check=True,
        )
    return target
