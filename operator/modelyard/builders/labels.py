"""Labels and names shared by every child of a Model."""

from __future__ import annotations

from modelyard.api.v1alpha1 import API_VERSION, CANARY_SUFFIX

MANAGED_BY = "modelyard"
MODEL_LABEL = "modelyard.dev/model"
TEMPLATE_LABEL = "modelyard.dev/template"
SPEC_HASH_ANNOTATION = "modelyard.dev/spec-hash"
#: On a canary's pods (and in its Deployment's selector): which of a Model's pods are the
#: canary's. The Service selects both tracks; the main Deployment's selector is older than
#: canaries and cannot change (it matches the canary's pods too, which it leaves alone: they
#: belong to the canary's ReplicaSet).
TRACK_LABEL = "modelyard.dev/track"
CANARY_TRACK = "canary"
#: On the short-lived pods that pull a new revision's weights onto a node before its workers
#: start (`builders.warming`): the Model they warm for. Not the Model's own label, which the
#: Service and the Deployment select by: a warming pod must never be sent requests nor be
#: counted as a worker.
WARMS_LABEL = "modelyard.dev/warms"
#: On a warming pod: the weights (`host/repository@sha256:…`) it pulls.
WEIGHTS_ANNOTATION = "modelyard.dev/weights"
CONTAINER_NAME = "model"
PORT_NAME = "http"


def selector(model: str) -> dict[str, str]:
    """The label selector of a Model's pods; immutable on a Deployment, so kept minimal."""
    return {MODEL_LABEL: model}


def canary_name(model: str) -> str:
    return f"{model}{CANARY_SUFFIX}"


def child_labels(model: str, template: str) -> dict[str, str]:
    """Labels on every child, so `kubectl get all -l modelyard.dev/model=x` finds them."""
    return {
        "app.kubernetes.io/name": model,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "model-server",
        MODEL_LABEL: model,
        TEMPLATE_LABEL: template,
    }


def owner_reference(model: str, uid: str) -> dict[str, object]:
    """Makes the Model the controller of a child, so deleting the Model deletes the child."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "name": model,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
