"""Credentials for a registry, read from the Kubernetes Secret a Registry names.

Three Secret shapes are understood, as Kubernetes users already write them:
`kubernetes.io/dockerconfigjson` (what `kubectl create secret docker-registry` makes, and what
quay.io robot accounts download), `kubernetes.io/basic-auth`, and an Opaque Secret with a `token`
key (and optionally `username`), whose token is presented as the password — which is how GHCR
personal access tokens, Harbor robot secrets and quay robot tokens are used.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from modelyard.registry.http import Credentials

DOCKER_CONFIG = "kubernetes.io/dockerconfigjson"
BASIC_AUTH = "kubernetes.io/basic-auth"
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


#: A Secret the operator may use must say so. Anyone who may write a Model or a Registry in a
#: namespace may name a Secret there, including one they cannot read themselves; the operator
#: can read them all. Without consent it would be a confused deputy: sending another team's
#: token to a server of the writer's choosing, or mounting it into a pod the writer controls.
CONSENT_LABEL = "modelyard.dev/use"
CONSENT_VALUE = "true"


def consents(secret: dict[str, Any]) -> bool:
    """Whether the Secret's owner agreed to its use by modelyard (`CONSENT_LABEL`)."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return labels.get(CONSENT_LABEL) == CONSENT_VALUE


def refusal(name: str, purpose: str) -> str:
    """What to say about a Secret that does not consent: what is missing, and who can fix it."""
    return (
        f"Secret {name} ({purpose}) is not labelled {CONSENT_LABEL}={CONSENT_VALUE}: modelyard "
        "uses a Secret only when its owner labels it so (kubectl label secret "
        f"{name} {CONSENT_LABEL}={CONSENT_VALUE})"
    )


class SecretInvalid(Exception):  # noqa: N818 -- a verdict on user input, shown as a reason
    """The Secret exists but does not hold credentials in a shape we understand."""


def secret_text(secret: dict[str, Any], key: str) -> str | None:
    """The text under `key` (stringData or base64 data); None when absent."""
    string_data = secret.get("stringData") or {}
    if key in string_data:
        return str(string_data[key])
    data = secret.get("data") or {}
    if key not in data:
        return None
    try:
        return base64.b64decode(data[key]).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretInvalid(f"key {key} is not valid base64 text") from None


def _canonical(host: str) -> str:
    """`https://index.docker.io/v1/` and `registry-1.docker.io` are both Docker Hub."""
    bare = host.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if bare in DOCKER_HUB_HOSTS else bare


def _from_docker_config(name: str, raw: str, host: str) -> Credentials:
    try:
        auths = json.loads(raw).get("auths") or {}
    except (ValueError, AttributeError):
        raise SecretInvalid(f"Secret {name}: .dockerconfigjson is not JSON") from None
    for entry, value in auths.items():
        if _canonical(entry) != _canonical(host):
            continue
        if value.get("auth"):
            try:
                decoded = base64.b64decode(value["auth"]).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise SecretInvalid(f"Secret {name}: auth for {entry} is not base64") from None
            user, _, password = decoded.partition(":")
            return Credentials(user, password)
        return Credentials(value.get("username"), value.get("password"))
    raise SecretInvalid(f"Secret {name} has no credentials for {host}")


def from_secret(secret: dict[str, Any], host: str) -> Credentials:
    """Credentials for `host` from a Secret manifest (as read from the API or a file)."""
    name = (secret.get("metadata") or {}).get("name", "?")
    kind = secret.get("type", "Opaque")
    if kind == DOCKER_CONFIG:
        raw = secret_text(secret, ".dockerconfigjson")
        if raw is None:
            raise SecretInvalid(
                f"Secret {name} of type {DOCKER_CONFIG} has no .dockerconfigjson key"
            )
        return _from_docker_config(name, raw, host)
    if kind == BASIC_AUTH:
        username, password = secret_text(secret, "username"), secret_text(secret, "password")
        if username is None or password is None:
            raise SecretInvalid(
                f"Secret {name} of type {BASIC_AUTH} needs username and password keys"
            )
        return Credentials(username, password)
    token = secret_text(secret, "token")
    if token is None:
        raise SecretInvalid(
            f"Secret {name} has none of the expected keys: "
            ".dockerconfigjson, username and password, or token"
        )
    return Credentials(secret_text(secret, "username") or "token", token)


def mlflow_from_secret(secret: dict[str, Any]) -> Credentials:
    """Credentials for an MLflow server: `username` and `password` (basic auth, as MLflow's
    basic-auth app and the MLFLOW_TRACKING_USERNAME/PASSWORD variables take them), or a `token`
    (a bearer token, as MLFLOW_TRACKING_TOKEN and Databricks personal access tokens)."""
    name = (secret.get("metadata") or {}).get("name", "?")
    username, password = secret_text(secret, "username"), secret_text(secret, "password")
    if username is not None and password is not None:
        return Credentials(username, password)
    token = secret_text(secret, "token")
    if token is not None:
        return Credentials(token=token)
    raise SecretInvalid(
        f"Secret {name} has neither username and password keys nor a token key, which an "
        "MLflow registry needs"
    )


def docker_config(host: str, credentials: Credentials) -> str:
    """A .dockerconfigjson document that lets the kubelet pull from `host`."""
    auth = base64.b64encode(
        f"{credentials.username or ''}:{credentials.password or ''}".encode()
    ).decode()
    return json.dumps(
        {
            "auths": {
                host: {
                    "username": credentials.username,
                    "password": credentials.password,
                    "auth": auth,
                }
            }
        },
        sort_keys=True,
    )
