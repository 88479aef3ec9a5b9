"""A signed model server as a real container on the real node: under an Enforce policy the
pod runs only what the release key signed, and an unsigned image never starts."""

from __future__ import annotations

from pathlib import Path

from support import cosign
from support.cluster import Cluster, RealNode
from support.controllers import CONSENT, DEPLOYMENTS, MODELS, apply_documents, condition
from support.operator_process import OperatorProcess, eventually
from support.workloads import model, registry_documents, template
from test_node import kubelet_ready, pods_of, reaches

TEMPLATES = "modelyard.dev/v1alpha1/modeltemplates"


async def test_only_signed_images_start_on_the_node(
    cluster: Cluster, real_node: RealNode, node_operator: OperatorProcess, tmp_path: Path
) -> None:
    signer = cosign.Cosign(cosign.binary(), tmp_path / "cosign")
    release = signer.generate_key_pair("release")
    signed_image = f"{real_node.registry.host}/{real_node.repository}@{real_node.digest}"
    signer.sign(release, signed_image, bundle=True, credentials=real_node.credentials)
    unsigned = real_node.push("1.0.0-unsigned", variant="unsigned", env={"BATCH_SIZE": "8"})

    secret, registry = registry_documents(real_node)
    registry["spec"]["signatures"] = {"publicKeys": [{"secretName": "release-key"}]}
    key = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "release-key", "labels": CONSENT},
        "stringData": {"cosign.pub": release.public_pem},
    }
    await apply_documents(
        cluster, [key, secret, registry, template(real_node), model("signed-model")]
    )
    ready = await reaches(cluster, node_operator, "signed-model", ("READY", "Available"))
    assert ready["status"]["image"] == signed_image
    (pod,) = pods_of(cluster, "signed-model")
    assert kubelet_ready(pod)
    assert pod["status"]["containerStatuses"][0]["imageID"].endswith(real_node.digest)
    template_status = cluster.get(TEMPLATES, cluster.namespace, "served")
    assert condition(template_status, "Signed")["reason"] == "SignatureVerified"

    # The template is edited to an unsigned image: it never reaches the node. The serving pod
    # stays (same container), and the Model says why it does not roll.
    await apply_documents(cluster, [template(real_node, digest=unsigned)])
    await eventually(
        lambda: (
            condition(
                cluster.get(MODELS, cluster.namespace, "signed-model"), "TemplateResolved"
            ).get("reason")
            == "TemplateNotReady"
        ),
        30,
        "the Model waits for a signed image",
        node_operator,
    )
    said = condition(cluster.get(MODELS, cluster.namespace, "signed-model"), "TemplateResolved")
    assert "SignatureMissing" in said["message"]
    (still,) = pods_of(cluster, "signed-model")
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
    deployment = cluster.get(DEPLOYMENTS, cluster.namespace, "signed-model")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == signed_image
    assert not any(
        e["reason"] == "Pulling" and unsigned in e["message"]
        for e in cluster.list("v1/events", cluster.namespace)
    )

    # The owner signs it: the Model rolls, and the new pod runs the now-signed digest.
    signer.sign(
        release,
        f"{real_node.registry.host}/{real_node.repository}@{unsigned}",
        bundle=False,
        credentials=real_node.credentials,
    )

    def rolled() -> bool:
        pods = pods_of(cluster, "signed-model")
        return (
            len(pods) == 1
            and pods[0]["metadata"]["uid"] != pod["metadata"]["uid"]
            and kubelet_ready(pods[0])
            and pods[0]["status"]["containerStatuses"][0]["imageID"].endswith(unsigned)
        )

    await eventually(rolled, 90, "the signed image running", node_operator)
    await reaches(cluster, node_operator, "signed-model", ("READY", "Available"))
