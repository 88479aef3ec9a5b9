"""Consent taken back: what the operator made with a Secret stops using it.

A Secret is used only while its owner labels it `modelyard.dev/use=true`. Taking the label off
must end that use, not only refuse the next one: a Deployment keeps its `secretKeyRef`s and
`imagePullSecrets` for as long as it exists, and every new pod — a restart, a scale-up, a
reschedule — reads the Secret as it is then, a rotated value included. So when a Model's plan is
blocked and its running workers still refer to a Secret that exists and no longer consents, the
workers go (the Deployment and any canary); its Service stays, and the workers come back as soon
as the Secret consents again or the Model stops naming it.

A Secret that is gone is left alone: no pod can read it, and deleting and creating it again
(how some tools rotate) must not stop a Model for the moment between. Its labels are read as
metadata only, never its data. The operator's own pull Secrets (written for a Registry, and
blanked when its credentials stop consenting) are not the users' to consent to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelyard.builders import drift
from modelyard.builders.labels import MANAGED_BY
from modelyard.kube import Kube
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE

Manifest = dict[str, Any]
#: Labels of the pull Secrets the operator writes for Registries.
REGISTRY_LABEL = "modelyard.dev/registry"


def referenced_secrets(deployment: Manifest | None) -> set[str]:
    """Every Secret a Deployment's pods read: env and envFrom of every container, volumes
    (projected ones too) and image pull Secrets."""
    if deployment is None:
        return set()
    pod = ((drift.spec_of(deployment) or {}).get("template") or {}).get("spec") or {}
    found = {str(ref.get("name")) for ref in pod.get("imagePullSecrets") or [] if ref.get("name")}
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        for variable in container.get("env") or []:
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                found.add(str(ref["name"]))
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef") or {}
            if ref.get("name"):
                found.add(str(ref["name"]))
    for volume in pod.get("volumes") or []:
        secret = volume.get("secret") or {}
        if secret.get("secretName"):
            found.add(str(secret["secretName"]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            ref = source.get("secret") or {}
            if ref.get("name"):
                found.add(str(ref["name"]))
    return found


async def revoked(
    kube: Kube, namespace: str, workloads: Iterable[Manifest | None], consenting: frozenset[str]
) -> list[str]:
    """The Secrets `workloads` read that exist and do not consent (now, as the API server
    says: the informer may not have seen a new label yet)."""
    names = set().union(*(referenced_secrets(workload) for workload in workloads)) - consenting
    found = []
    for name in sorted(names):
        metadata = ((await kube.metadata("v1", "Secret", namespace, name)) or {}).get("metadata")
        if metadata is None:
            continue  # gone: nothing reaches a pod from it
        labels = metadata.get("labels") or {}
        if labels.get(CONSENT_LABEL) == CONSENT_VALUE:
            continue
        if labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and REGISTRY_LABEL in labels:
            continue  # a Registry's pull Secret, the operator's own
        found.append(name)
    return found


__all__ = ["referenced_secrets", "revoked"]
