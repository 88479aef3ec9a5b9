"""How the operator finds its credentials (`modelyard.kube.login`, kubernetes_asyncio's loaders),
each way proved by a real call to the real API server: the pod's service account, a kubeconfig
token, client certificates at paths relative to the kubeconfig, an exec plugin (EKS, GKE and
OIDC helpers work so), and an OIDC auth provider whose id-token has expired."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from modelyard.kube import ApiError, Kube
from modelyard.kube import login as kube_login
from support.cluster import Session

PLUGIN = """
import json, os
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1",
    "kind": "ExecCredential",
    "status": {"token": os.environ["ISSUED_TOKEN"], "expirationTimestamp": "2999-01-01T00:00:00Z"},
}))
"""


def kubeconfig(path: Path, server: str, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


async def listed_kind(kube: Kube) -> str:
    """A list of Models, which the operator's service account and the admin may both make."""
    try:
        listed = await kube.list("/apis/modelyard.dev/v1alpha1/models", {"limit": "1"})
        return str(listed["kind"])
    finally:
        await kube.close()


@pytest.fixture
def config_dir(tmp_path: Path, session: Session) -> Iterator[Path]:
    """A kubeconfig's directory, with the cluster's CA next to it (referred to relatively)."""
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "admin.crt", "admin.key"):
        shutil.copy(session.plane.pki / name, tmp_path / "pki" / name)
    yield tmp_path


async def test_exec_plugin_token_is_used(
    config_dir: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = config_dir / "plugin.py"
    plugin.write_text(PLUGIN)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "env": [{"name": "ISSUED_TOKEN", "value": session.token}],
        }
    }
    path = kubeconfig(
        config_dir / "config", session.plane.server, {"certificate-authority": "pki/ca.crt"}, user
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert await listed_kind(Kube(kube_login.login, "test")) == "ModelList"


async def test_a_token_the_server_refuses_is_a_401(
    config_dir: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubeconfig(
        config_dir / "config",
        session.plane.server,
        {"certificate-authority": "pki/ca.crt"},
        {"token": "not-a-token"},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(ApiError) as refused:
        await listed_kind(Kube(kube_login.login, "test"))
    assert refused.value.status == 401
    assert "not-a-token" not in str(refused.value)


async def test_client_certificate_at_relative_paths(
    config_dir: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"}
    path = kubeconfig(
        config_dir / "config", session.plane.server, {"certificate-authority": "pki/ca.crt"}, user
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert await listed_kind(Kube(kube_login.login, "test")) == "ModelList"


async def test_in_a_pod_the_service_account_is_used(
    config_dir: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = config_dir / "serviceaccount"
    root.mkdir()
    (root / "token").write_text(session.token + "\n")
    shutil.copy(config_dir / "pki" / "ca.crt", root / "ca.crt")
    host, port = session.plane.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv("KUBECONFIG", str(config_dir / "absent"))
    monkeypatch.setattr(kube_login, "SERVICE_ACCOUNT", root)
    found = kube_login.login()
    assert found.token == session.token
    assert session.token not in repr(found)
    assert await listed_kind(Kube(kube_login.login, "test")) == "ModelList"


def test_without_any_credentials_the_error_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(kube_login.LoginError, match=r"nowhere\.yaml"):
        kube_login.login()


def test_a_failing_exec_plugin_is_named_with_its_last_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text("import sys; sys.exit('token expired: run aws sso login')")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }
    monkeypatch.setenv(
        "KUBECONFIG", str(kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {}, user))
    )
    with pytest.raises(kube_login.LoginError, match=r"run aws sso login"):
        kube_login.login()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


async def test_an_expired_oidc_id_token_is_refreshed_at_the_issuer(
    config_dir: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The identity provider is played by a small HTTP server (discovery and the token
    # endpoint): no real one (dex, Keycloak) is built here. The API server that accepts the
    # refreshed token is the real one.
    refreshed: list[str] = []

    async def discovery(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        return web.json_response({"issuer": base, "token_endpoint": f"{base}/token"})

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        refreshed.append(str(form["refresh_token"]))
        return web.json_response({"id_token": session.token, "refresh_token": "second"})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        user = {
            "auth-provider": {
                "name": "oidc",
                "config": {
                    "client-id": "modelyard",
                    "client-secret": "not-a-secret",
                    "idp-issuer-url": f"http://127.0.0.1:{port}",
                    "id-token": unsigned_jwt({"exp": 1}),
                    "refresh-token": "first",
                },
            }
        }
        path = kubeconfig(
            config_dir / "config",
            session.plane.server,
            {"certificate-authority": "pki/ca.crt"},
            user,
        )
        monkeypatch.setenv("KUBECONFIG", str(path))
        assert await listed_kind(Kube(kube_login.login, "test")) == "ModelList"
        assert refreshed == ["first"]
        # The kubeconfig is the user's: the operator does not write the new tokens back.
        assert "second" not in path.read_text()
    finally:
        await runner.cleanup()


def test_a_kubeconfig_without_a_current_context_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {}, {"token": "x"})
    config = yaml.safe_load(path.read_text())
    config["current-context"] = "elsewhere"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(kube_login.LoginError, match=r"kubeconfig"):
        kube_login.login()
