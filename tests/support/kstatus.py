"""What Flux concludes about an object: cli-utils' kstatus `status.Compute`, the Go library
Flux's health checks and `kubectl`-style waiters are built on, run on the object as the API
server returned it (`testcluster kstatus`, built with the control plane)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from support import control_plane


def compute(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message): Current, InProgress, Failed, Terminating, NotFound or Unknown."""
    answer = subprocess.run(
        [str(control_plane.build()), "kstatus"],
        input=json.dumps(obj).encode(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    result = json.loads(answer.stdout)
    assert "error" not in result, result
    return str(result["status"]), str(result["message"])
