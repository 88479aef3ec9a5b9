"""Run each server of the runtimes image as a pod would, without Kubernetes, and show what it
answers: the image's root, its user, environment and working directory, the template's
command, args and env (tests/support/runtime_image.py), on this machine's loopback.

    .venv/bin/python image/runtimes/smoke.py LAYOUT TAG [TRANSCRIPT]

Needs root (a mount namespace: /proc, /dev and a fresh /tmp inside the root, then chroot to
uid 10001). MLflow's scoring server loads a model that this script logs and registers, as a
model owner would, in a real `mlflow server` behind basic auth (tests/support/mlflow_server.py).
Every request and answer goes to TRANSCRIPT (default: smoke.log beside LAYOUT); the script
fails on the first answer that is not what the runtime's protocol says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support import runtime_image as ri  # noqa: E402
from support.mlflow_server import ADMIN, MlflowServer  # noqa: E402
from support.operator_process import free_port  # noqa: E402

READY_TIMEOUT = 120.0


class Transcript:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("w")

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()

    def ask(
        self,
        port: int,
        method: str,
        path: str,
        body: Any = None,
        *,
        form: dict[str, Any] | None = None,
        quiet: bool = False,
    ) -> tuple[int, Any]:
        """One request; its status and body (JSON when it is), both written down."""
        data, headers = None, {}
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, raw, kind = answer.status, answer.read(), answer.headers["Content-Type"]
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers["Content-Type"]
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        if not quiet:
            sent = json.dumps(body) if body is not None else ""
            if form is not None:
                sent = "(form) " + urllib.parse.urlencode(form)
            shown = json.dumps(parsed) if not isinstance(parsed, str) else repr(parsed)
            if len(shown) > 1500:
                shown = shown[:1500] + f"... ({len(shown)} characters)"
            self.note(f"  {method} {path} {sent}\n    -> {status} {kind}\n    {shown}")
        return status, parsed


def unpack(layout: Path, tag: str, target: Path) -> tuple[Path, dict[str, Any]]:
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(target)],
        check=True,
        capture_output=True,
    )
    return target / "rootfs", json.loads((target / "config.json").read_text())["process"]


@contextlib.contextmanager
def serving(
    rootfs: Path, process: dict[str, Any], runtime: ri.Runtime, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The runtime's server in its own mount and PID namespaces, on the host's loopback."""
    env = dict(item.split("=", 1) for item in process["env"]) | runtime.env
    user = process["user"]
    inner = [
        "/usr/bin/env",
        "-i",
        "-C",
        process["cwd"],
        *(f"{name}={value}" for name, value in env.items()),
        *runtime.command,
        *runtime.args,
    ]
    script = (
        f"set -e; r={shlex.quote(str(rootfs))}; mount --rbind /dev $r/dev; "
        "mount -t proc proc $r/proc; mount -t tmpfs -o mode=1777 tmpfs $r/tmp; "
        f"exec chroot --userspec={user['uid']}:{user['gid']} $r {shlex.join(inner)}"
    )
    with log.open("wb") as output:
        server = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_ready(
    t: Transcript, server: subprocess.Popen[bytes], port: int, path: str, log: Path
) -> float:
    """Seconds from start until `path` answers 200; the first answers that were not, noted."""
    started, seen = time.monotonic(), set()
    while time.monotonic() - started < READY_TIMEOUT:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{log.read_text()}")
        try:
            status, body = t.ask(port, "GET", path, quiet=True)
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            status, body = 0, type(error).__name__
        if status == 200:
            return time.monotonic() - started
        if status not in seen:
            seen.add(status)
            t.note(f"  (at {time.monotonic() - started:.1f} s GET {path} -> {status} {body!r})")
        time.sleep(0.25)
    raise TimeoutError(f"{path} not ready within {READY_TIMEOUT:g} s:\n{log.read_text()}")


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def on_port(runtime: ri.Runtime, port: int) -> ri.Runtime:
    """The runtime on `port` instead of 8080 (the host's loopback is shared)."""
    args = tuple(str(port) if a == str(ri.PORT) else a for a in runtime.args)
    env = {k: str(port) if v == str(ri.PORT) else v for k, v in runtime.env.items()}
    if runtime.name.startswith("mlserver"):
        env |= {"MLSERVER_GRPC_PORT": str(free_port()), "MLSERVER_METRICS_PORT": str(free_port())}
    return replace(runtime, args=args, env=env)


def check_mlserver(t: Transcript, port: int, wrong_shape: bool) -> None:
    rows = [list(s) for s in ri.SAMPLES]
    request = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": [3, 4],
                "data": [x for row in rows for x in row],
            }
        ]
    }
    if not wrong_shape:
        t.ask(port, "GET", "/v2/health/live")
        t.ask(port, "GET", "/v2/health/ready")
        t.ask(port, "GET", "/v2/models/iris/ready")
        t.ask(port, "GET", "/v2")
        status, meta = t.ask(port, "GET", "/v2/models/iris")
        expect(status == 200 and meta["inputs"] and meta["outputs"], "metadata lists tensors")
    status, answer = t.ask(port, "POST", "/v2/models/iris/infer", request)
    expect(status == 200, "infer answers 200")
    shape = answer["outputs"][0]["shape"]
    expect(shape == ([4, 1] if wrong_shape else [3, 1]), f"shape {shape}")
    if wrong_shape:
        return
    expect(answer["outputs"][0]["data"] == [0, 1, 2], "one species per flower")
    nested = {"inputs": [{**request["inputs"][0], "data": rows}]}
    t.ask(port, "POST", "/v2/models/iris/infer", nested)
    proba = {**request, "outputs": [{"name": "predict_proba"}]}
    t.ask(port, "POST", "/v2/models/iris/infer", proba)
    bad = {"inputs": [{**request["inputs"][0], "shape": [4, 3]}]}
    t.ask(port, "POST", "/v2/models/iris/infer", bad)
    t.ask(port, "POST", "/v2/models/iris/infer", {"inputs": []})
    t.ask(port, "GET", "/v2/models/nosuch")
    t.ask(port, "POST", "/v2/models/nosuch/infer", request)


def check_deepaas(t: Transcript, port: int, broken: str) -> None:
    flower = dict(zip(ri.FEATURES, ri.SAMPLES[1], strict=True))
    query = "/v2/models/iris/predict/?" + urllib.parse.urlencode(flower)
    if broken:
        status, answer = t.ask(port, "POST", query)
        return
    t.ask(port, "GET", "/v2/")
    status, listed = t.ask(port, "GET", "/v2/models/")
    expect(status == 200 and listed["models"][0]["id"] == "iris", "the model is listed")
    t.ask(port, "GET", "/v2/models/iris/")
    status, answer = t.ask(port, "POST", query)
    expect(status == 200 and answer["predictions"][0]["label"] == "versicolor", "predicts")
    t.ask(port, "POST", "/v2/models/iris/predict/", form=flower)
    t.ask(port, "POST", "/v2/models/iris/predict/", body=flower)
    partial = dict(list(flower.items())[:3])
    t.ask(port, "POST", "/v2/models/iris/predict/?" + urllib.parse.urlencode(partial))
    t.ask(
        port,
        "POST",
        "/v2/models/iris/predict/?" + urllib.parse.urlencode({**flower, "petal_width": "wide"}),
    )
    status, spec = t.ask(port, "GET", "/swagger.json", quiet=True)
    expect(status == 200, "the OpenAPI document")
    predict = spec["paths"]["/v2/models/iris/predict/"]["post"]
    t.note(f"  GET /swagger.json -> {status}; {spec.get('swagger')}, paths {list(spec['paths'])}")
    t.note(f"    predict: {json.dumps(predict)}")
    t.note(f"    definitions: {json.dumps(spec.get('definitions'))[:3000]}")


def check_mlflow(t: Transcript, port: int) -> None:
    t.ask(port, "GET", "/ping")
    t.ask(port, "GET", "/health")
    t.ask(port, "GET", "/version")
    rows = [list(s) for s in ri.SAMPLES]
    split = {"dataframe_split": {"columns": list(ri.FEATURES), "data": rows}}
    status, answer = t.ask(port, "POST", "/invocations", split)
    expect(status == 200 and len(answer["predictions"]) == 3, "one prediction per row")
    records = [dict(zip(ri.FEATURES, r, strict=True)) for r in rows]
    t.ask(port, "POST", "/invocations", {"dataframe_records": records})
    t.ask(port, "POST", "/invocations", {"instances": records})
    t.ask(port, "POST", "/invocations", {"inputs": records})
    t.ask(port, "POST", "/invocations", {"inputs": rows})
    wrong = {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": rows}}
    t.ask(port, "POST", "/invocations", wrong)
    t.ask(
        port,
        "POST",
        "/invocations",
        {"dataframe_split": {"columns": list(ri.FEATURES)[:3], "data": [r[:3] for r in rows]}},
    )
    t.ask(port, "POST", "/invocations", {"rows": rows})


def register_iris(tracking: MlflowServer) -> str:
    """Log a scikit-learn iris model with MLflow's client and point `champion` at it."""
    import mlflow  # noqa: PLC0415 -- the tests' MLflow (pyproject's [test] extra)
    import pandas as pd  # noqa: PLC0415
    from sklearn.datasets import load_iris  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    data = load_iris(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.columns = list(ri.FEATURES)
    model = LogisticRegression(max_iter=1000).fit(frame, data.target)
    with tracking._as(ADMIN):
        mlflow.set_tracking_uri(tracking.url)
        mlflow.set_experiment("iris")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=pd.DataFrame(frame.iloc[:2])
            )
        version = mlflow.register_model(info.model_uri, "iris").version
        mlflow.MlflowClient().set_registered_model_alias("iris", "champion", version)
    return str(version)


def main(layout: Path, tag: str, transcript: Path) -> None:
    t = Transcript(transcript)
    work = Path(tempfile.mkdtemp(prefix="runtimes-smoke-"))
    rootfs, process = unpack(layout, tag, work / "bundle")
    t.note(f"image {layout}:{tag}: user {process['user']}, cwd {process['cwd']}")
    t.note(f"  env {process['env']}")
    runs: list[tuple[ri.Runtime, Any]] = [
        (ri.MLSERVER, lambda port: check_mlserver(t, port, wrong_shape=False)),
        (ri.MLSERVER_WRONG_SHAPE, lambda port: check_mlserver(t, port, wrong_shape=True)),
        (ri.DEEPAAS, lambda port: check_deepaas(t, port, "")),
        (ri.DEEPAAS_BROKEN_SCHEMA, lambda port: check_deepaas(t, port, "type")),
        (
            ri.DEEPAAS.with_env(IRIS_BREAK_SCHEMA="missing"),
            lambda port: check_deepaas(t, port, "missing"),
        ),
    ]
    tracking = MlflowServer(work / "mlflow", basic_auth=True)
    asyncio.run(tracking.start())
    try:
        version = register_iris(tracking)
        t.note(f"mlflow: registered iris version {version}, alias champion, at {tracking.url}")
        runs.append(
            (
                ri.mlflow(
                    "models:/iris@champion",
                    tracking.url,
                    MLFLOW_TRACKING_USERNAME=ADMIN[0],
                    MLFLOW_TRACKING_PASSWORD=ADMIN[1],
                ),
                lambda port: check_mlflow(t, port),
            )
        )
        for runtime, check in runs:
            port = free_port()
            running = on_port(runtime, port)
            t.note(f"\n== {runtime.name}: {shlex.join(running.command + running.args)}")
            t.note(f"   env {running.env}")
            log = work / f"{runtime.name}-{len(runtime.env)}.log"
            with serving(rootfs, process, running, log) as server:
                seconds = wait_ready(t, server, port, runtime.readiness_path, log)
                t.note(f"  ready after {seconds:.1f} s (GET {runtime.readiness_path} -> 200)")
                check(port)
            t.note(
                "  server log, last lines:\n    " + "\n    ".join(log.read_text().splitlines()[-8:])
            )
    finally:
        asyncio.run(tracking.stop())
    t.note(f"\nall answered as their protocols say; transcript {transcript}; work {work}")


if __name__ == "__main__":
    layout = Path(sys.argv[1]).resolve()
    main(
        layout, sys.argv[2], Path(sys.argv[3]) if len(sys.argv) > 3 else layout.parent / "smoke.log"
    )
