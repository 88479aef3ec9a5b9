"""A real MLflow tracking server on loopback: `mlflow server` from PyPI, sqlite backend.

Started by the tests that need it, anonymous or behind MLflow's own basic-auth app. Models are
registered through MLflow's own Python client (`mlflow.MlflowClient`), as a model owner would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The administrator MLflow's basic-auth app creates on first start.
ADMIN = ("admin", "admin-pa55word-1234")
START_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MlflowServer:
    def __init__(self, root: Path, *, basic_auth: bool = False, host: str = "127.0.0.1") -> None:
        self.root = root
        self.basic_auth = basic_auth
        #: Where it listens: loopback, or the real node's address for pods to reach it.
        self.host = host
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> MlflowServer:
        env = {**os.environ, "MLFLOW_FLASK_SERVER_SECRET_KEY": "modelyard-tests"}
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--workers",
            "1",
        ]
        if self.host != "127.0.0.1":
            # MLflow checks the Host header (DNS rebinding); the node's address is not one of
            # the private ranges it allows by default.
            command += ["--allowed-hosts", f"{self.host},{self.host}:{self.port},localhost"]
        if self.basic_auth:
            config = self.root / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{self.root / 'auth.db'}\n"
                f"admin_username = {ADMIN[0]}\n"
                f"admin_password = {ADMIN[1]}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            command += ["--app-name", "basic-auth"]
        log = (self.root / "server.log").open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while not await asyncio.to_thread(self._healthy):
            if self._process.poll() is not None:
                raise RuntimeError(
                    "mlflow server exited: " + (self.root / "server.log").read_text()[-2000:]
                )
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"mlflow server did not answer within {START_TIMEOUT:g} s")
            await asyncio.sleep(0.3)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            await asyncio.to_thread(process.wait)

    @contextlib.contextmanager
    def _as(self, user: tuple[str, str] | None) -> Iterator[None]:
        """MLflow's client reads its credentials from the environment only."""
        names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        saved = {name: os.environ.get(name) for name in names}
        if user is not None:
            os.environ.update(dict(zip(names, user, strict=True)))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One call of `mlflow.MlflowClient`, as the administrator when auth is on."""
        from mlflow import MlflowClient  # noqa: PLC0415 -- slow to import; only these tests need it

        with self._as(ADMIN if self.basic_auth else None):
            return getattr(MlflowClient(tracking_uri=self.url), method)(*args, **kwargs)

    def register(self, name: str, source: str) -> str:
        """A new version of `name` (created first if need be); its version number."""
        from mlflow.exceptions import MlflowException  # noqa: PLC0415

        with contextlib.suppress(MlflowException):
            self.call("create_registered_model", name)
        return str(self.call("create_model_version", name, source).version)

    def create_user(self, username: str, password: str) -> None:
        from mlflow.server.auth.client import AuthServiceClient  # noqa: PLC0415

        with self._as(ADMIN):
            AuthServiceClient(self.url).create_user(username, password)

    def log_model(self, name: str, log: Callable[[Any], Any]) -> str:
        """A model logged in a run by `log(mlflow)` (e.g. `mlflow.sklearn.log_model(...)`) and
        registered as a new version of `name`, as a data scientist does; its version number.
        The artifacts go through the tracking server (it proxies them), so whoever may read
        the registry may load the model."""
        import mlflow  # noqa: PLC0415 -- slow to import; only these tests need it

        with self._as(ADMIN if self.basic_auth else None):
            mlflow.set_tracking_uri(self.url)
            mlflow.set_registry_uri(self.url)
            with mlflow.start_run():
                logged = log(mlflow)
            registered = mlflow.register_model(logged.model_uri, name)
            return str(registered.version)
