"""The operator on the real API server with a real registry and images signed by the real
cosign: a Registry's signature policy decides which ModelVersions and template images run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support import cosign
from support.cluster import Cluster
from support.controllers import MODELS, apply_documents, condition, events_for
from support.operator_process import OperatorProcess, eventually
from support.registry import LocalRegistry, require_tools
from test_operator_registry import (
    REGISTRIES,
    REPOSITORY,
    TEMPLATES,
    VERSIONS,
    image,
    model,
    ready_reason,
    registry,
    secret,
    template,
    version,
)


def signatures(mode: str = "Enforce", secret_name: str = "cosign-pub") -> dict[str, Any]:
    return {"mode": mode, "publicKeys": [{"secretName": secret_name, "key": "cosign.pub"}]}


def key_secret(name: str, pair: cosign.KeyPair, *, consent: bool = True) -> dict[str, Any]:
    document = secret(name, cosign_pub=pair.public_pem)
    if not consent:
        document["metadata"].pop("labels")
    return document


def signed(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    return condition(cluster.get(resource, cluster.namespace, name), "Signed")


def message(cluster: Cluster, resource: str, name: str, kind: str = "Ready") -> str:
    return str(condition(cluster.get(resource, cluster.namespace, name), kind).get("message"))


async def test_enforce_runs_only_signed_versions_and_a_revoked_key_stops_new_rollouts(
    cluster: Cluster, tmp_path: Path
) -> None:
    require_tools()
    signer = cosign.Cosign(cosign.binary(), tmp_path / "cosign")
    owner = signer.generate_key_pair("owner")
    stranger = signer.generate_key_pair("stranger")
    local = await LocalRegistry(tmp_path / "plain").start()
    first = local.push(REPOSITORY, "1.0.0", "weights 1.0.0")
    second = local.push(REPOSITORY, "1.1.0", "weights 1.1.0")
    signer.sign(owner, f"{local.host}/{REPOSITORY}@{first}", bundle=False)
    operator = OperatorProcess(cluster.operator_kubeconfig(tmp_path), tmp_path).start()
    try:
        await apply_documents(
            cluster,
            [
                key_secret("cosign-pub", owner),
                registry("local", local.url, signatures=signatures(), checkIntervalSeconds=10),
                template("llm-cpu"),
                version("awesome-llm-1.0.0", "1.0.0", first, "1.0.0"),
                version("awesome-llm-1.1.0", "1.1.0", second, "1.1.0"),
                model("chat", "llm-cpu", ">=1.0.0 <2.0.0"),
            ],
        )
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "awesome-llm-1.1.0") == "SignatureMissing",
            30,
            "the unsigned version refused",
            operator,
        )
        assert signed(cluster, VERSIONS, "awesome-llm-1.1.0")["status"] == "False"
        assert (
            (cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0")["status"]).get("image")
            is None
        )
        assert (
            condition(cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0"), "Stalled")[
                "reason"
            ]
            == "SignatureMissing"
        ), "kstatus: only a signature (a change elsewhere) helps"
        assert signed(cluster, VERSIONS, "awesome-llm-1.0.0")["reason"] == "SignatureVerified"
        assert (
            "signed by cosign-pub/cosign.pub (ECDSA P-256)"
            in signed(cluster, VERSIONS, "awesome-llm-1.0.0")["message"]
        )
        keys = condition(cluster.get(REGISTRIES, cluster.namespace, "local"), "Signatures")
        assert keys["reason"] == "KeysLoaded" and "Enforce; 1 public key" in keys["message"]

        # The Model runs the signed 1.0.0, and says why not the newer 1.1.0.
        await eventually(
            lambda: image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{first}",
            20,
            "runs the signed 1.0.0",
            operator,
        )
        await eventually(
            lambda: (
                "1.1.0 (SignatureMissing)" in message(cluster, MODELS, "chat", "VersionResolved")
            ),
            10,
            "the Model names the unsigned version",
            operator,
        )

        # The owner signs 1.1.0 (as a Sigstore bundle): the next check finds it, and the Model
        # rolls to it.
        signer.sign(owner, f"{local.host}/{REPOSITORY}@{second}", bundle=True)
        await eventually(
            lambda: image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}",
            40,
            "rolled to 1.1.0 once signed",
            operator,
        )
        assert "referrer" in signed(cluster, VERSIONS, "awesome-llm-1.1.0")["message"]

        # Someone pushes an unsigned image over the tag: reported, never followed; the pinned
        # digest is still the signed one.
        moved = local.push(REPOSITORY, "1.1.0", "unsigned weights over the tag")
        await eventually(
            lambda: (
                condition(
                    cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0"), "TagCurrent"
                ).get("reason")
                == "TagMoved"
            ),
            40,
            "tag moved",
            operator,
        )
        after = cluster.get(VERSIONS, cluster.namespace, "awesome-llm-1.1.0")
        assert moved in condition(after, "TagCurrent")["message"]
        assert condition(after)["status"] == "True"
        assert condition(after, "Signed")["reason"] == "SignatureVerified"
        assert image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}"

        # The key is revoked (the Secret now holds another key): what it signed no longer
        # verifies; the Model keeps running 1.1.0, says so, and rolls to nothing (no silent
        # downgrade to 1.0.0, which the old key signed too).
        await apply_documents(cluster, [key_secret("cosign-pub", stranger)])
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "awesome-llm-1.1.0") == "SignatureInvalid",
            30,
            "the revoked key's signature refused",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, MODELS, "chat") == "VersionNotReady",
            20,
            "the Model says what it runs no longer verifies",
            operator,
        )
        said = message(cluster, MODELS, "chat")
        assert "(SignatureInvalid) no longer verifies" in said and "keeps running" in said
        assert image(cluster, "chat") == f"{local.host}/{REPOSITORY}@{second}"
        assert any(
            e["reason"] == "SignatureInvalid" and e["type"] == "Warning"
            for e in events_for(cluster, "awesome-llm-1.1.0")
        )
    finally:
        await operator.stop()
        await local.stop()


async def test_warn_mode_unreadable_keys_and_template_images(
    cluster: Cluster, operator: OperatorProcess, tmp_path: Path
) -> None:
    require_tools()
    signer = cosign.Cosign(cosign.binary(), tmp_path / "cosign")
    owner = signer.generate_key_pair("owner")
    stranger = signer.generate_key_pair("stranger")
    local = await LocalRegistry(tmp_path / "plain").start()
    try:
        unsigned = local.push(REPOSITORY, "2.0.0", "never signed")
        good = local.push(REPOSITORY, "3.0.0", "signed")
        signer.sign(owner, f"{local.host}/{REPOSITORY}@{good}", bundle=True)
        await apply_documents(
            cluster,
            [
                key_secret("cosign-pub", owner),
                key_secret("unlabelled", owner, consent=False),
                registry("warn", local.url, signatures=signatures("Warn")),
                registry("enforce", local.url, signatures=signatures()),
                registry("absent-key", local.url, signatures=signatures(secret_name="absent")),
                registry("refused-key", local.url, signatures=signatures(secret_name="unlabelled")),
                version("warned-2.0.0", "2.0.0", unsigned, registry_name="warn"),
                version("keyless-3.0.0", "3.0.0", good, registry_name="absent-key"),
                version("refused-3.0.1", "3.0.1", good, registry_name="refused-key"),
                template(
                    "unsigned-image",
                    {"registry": "enforce", "repository": REPOSITORY, "digest": unsigned},
                ),
                template(
                    "signed-image",
                    {"registry": "enforce", "repository": REPOSITORY, "tag": "3.0.0"},
                ),
                model("blocked", "unsigned-image"),
                model("allowed", "signed-image"),
            ],
        )
        # Warn: runs, and says it is unsigned (condition and Warning Event).
        await eventually(
            lambda: signed(cluster, VERSIONS, "warned-2.0.0").get("reason") == "SignatureMissing",
            30,
            "warned",
            operator,
        )
        assert ready_reason(cluster, VERSIONS, "warned-2.0.0") == "DigestVerified"
        await eventually(
            lambda: any(
                e["reason"] == "SignatureMissing" and e["type"] == "Warning"
                for e in events_for(cluster, "warned-2.0.0")
            ),
            10,
            "a Warning Event",
            operator,
        )

        # A key that cannot be read: the Registry says which and why; its versions cannot
        # verify (KeyNotFound), and the Secret's consent rule holds for public keys too.
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "keyless-3.0.0") == "KeyNotFound",
            30,
            "no key",
            operator,
        )
        assert "Secret absent (public key) does not exist" in message(
            cluster, VERSIONS, "keyless-3.0.0"
        )
        absent = cluster.get(REGISTRIES, cluster.namespace, "absent-key")
        assert condition(absent, "Signatures")["reason"] == "KeyNotFound"
        assert condition(absent)["reason"] == "Reachable", "the registry itself is fine"
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "refused-3.0.1") == "KeyNotFound",
            30,
            "refused key",
            operator,
        )
        assert "modelyard.dev/use=true" in message(cluster, VERSIONS, "refused-3.0.1")

        # Template images are held to the policy too.
        await eventually(
            lambda: ready_reason(cluster, TEMPLATES, "unsigned-image") == "SignatureMissing",
            30,
            "unsigned template image refused",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, MODELS, "blocked") == "TemplateNotReady",
            20,
            "its Model waits",
            operator,
        )
        assert image(cluster, "blocked") is None
        await eventually(
            lambda: image(cluster, "allowed") == f"{local.host}/{REPOSITORY}@{good}",
            30,
            "the signed template image runs",
            operator,
        )
        assert signed(cluster, TEMPLATES, "signed-image")["reason"] == "SignatureVerified"

        # The missing key's Secret appears: the Registry reads it and its version verifies.
        await apply_documents(cluster, [key_secret("absent", owner)])
        await eventually(
            lambda: ready_reason(cluster, VERSIONS, "keyless-3.0.0") == "DigestVerified",
            30,
            "verified once the key is there",
            operator,
        )
        assert signed(cluster, VERSIONS, "keyless-3.0.0")["reason"] == "SignatureVerified"
        assert (
            condition(cluster.get(REGISTRIES, cluster.namespace, "absent-key"), "Signatures")[
                "reason"
            ]
            == "KeysLoaded"
        )

        # The key that signed the template's image is revoked: the template stops being Ready,
        # and its Model keeps the workers it has, on the signed digest, saying why.
        await apply_documents(cluster, [key_secret("cosign-pub", stranger)])
        await eventually(
            lambda: ready_reason(cluster, TEMPLATES, "signed-image") == "SignatureInvalid",
            30,
            "the template's image no longer trusted",
            operator,
        )
        await eventually(
            lambda: ready_reason(cluster, MODELS, "allowed") == "TemplateNotReady",
            20,
            "its Model says so",
            operator,
        )
        assert "SignatureInvalid" in message(cluster, MODELS, "allowed")
        assert image(cluster, "allowed") == f"{local.host}/{REPOSITORY}@{good}"
    finally:
        await local.stop()
