"""What a program costs while the bench runs it: memory and CPU read from /proc, py-spy's
samples of our operator, and the control plane's own CPU profile.

Read from outside the program (/proc, py-spy, the API server's pprof), never reported by it, so
ours and the baselines have their memory and CPU measured alike, and none reports on itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from audit import Figures
from paths import RESULTS

from support import control_plane
from support.api import Api


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat, fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PlaneProfile:
    """The control plane's CPU profile (Go's pprof, served by the API server to an admin) over
    the first seconds of a burst: what the server spends the CPU on for each program's writes
    and watches. Summarised with `go tool pprof -top`."""

    def __init__(self, api: Api, seconds: float, label: str) -> None:
        self.out = RESULTS / f"plane-{label}.pprof"
        self.seconds = seconds
        self.thread = threading.Thread(target=self._take, args=(api,), daemon=True)
        if self.seconds > 0:
            self.thread.start()

    def _take(self, api: Api) -> None:
        answer = api.raw(
            "GET",
            "/debug/pprof/profile",
            query={"seconds": str(int(self.seconds))},
            timeout=self.seconds + 30,
        )
        self.out.write_bytes(answer)

    def summary(self) -> str:
        if self.seconds <= 0:
            return ""
        self.thread.join(self.seconds + 60)
        if not self.out.exists():
            return "no control plane profile"
        top = subprocess.run(
            ["go", "tool", "pprof", "-top", "-nodecount=25", str(self.out)],
            capture_output=True,
            text=True,
            check=False,
        )
        text = top.stdout or top.stderr
        (self.out.with_suffix(".txt")).write_text(text)
        return text


class CpuMeter:
    """CPU used by a program and by the control plane from now until `stop`."""

    def __init__(self, pid: int, plane: control_plane.ControlPlane) -> None:
        self.pids = (pid, plane.process.pid)
        self.start = [cpu_seconds(p) for p in self.pids]

    def stop(self, figures: Figures) -> None:
        used = [cpu_seconds(p) - s for p, s in zip(self.pids, self.start, strict=True)]
        figures.cpu_s, figures.plane_cpu_s = used


class Profile:
    """py-spy sampling our operator from the burst until its last child is written."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(pid),
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        """Stop sampling; a summary: where the samples were, by area and by function."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)
        stacks: list[tuple[list[str], int]] = []
        for line in self.out.read_text().splitlines():
            joined, _, samples = line.rpartition(" ")
            if joined and samples.isdigit():
                stacks.append((joined.split(";"), int(samples)))
        total = sum(count for _, count in stacks) or 1
        areas = {
            "modelyard.handlers (events to the queue)": ("modelyard/handlers",),
            "aiohttp and ssl (HTTP to the API)": ("aiohttp/", "ssl.py", "asyncio/sslproto"),
            "json": ("json/",),
            "pydantic (parsing Models and templates)": ("pydantic",),
            "modelyard.kube (client, informers)": ("modelyard/kube",),
            "modelyard.reconcile / builders / status": (
                "modelyard/reconcile",
                "modelyard/builders",
                "modelyard/status",
            ),
            "logging": ("logging/",),
            "idle (waiting in select)": ("select (selectors.py",),
        }
        lines = [f"{total} samples at 100 Hz"]
        for area, marks in areas.items():
            hits = sum(c for frames, c in stacks if any(m in f for f in frames for m in marks))
            lines.append(f"  {100 * hits / total:5.1f}%  {area}")
        own: dict[str, int] = {}
        for frames, count in stacks:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        lines.append("  top functions (self time):")
        for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
            lines.append(f"  {100 * count / total:5.1f}%  {frame}")
        return "\n".join(lines)
