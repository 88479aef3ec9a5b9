"""Objects as the informers keep them: only the fields the passes read.

Thousands of pods and Models are held in memory at once, and most of a real object is never
read (managedFields above all), so each informer trims what it stores. A field a pass starts
reading must be kept here too, or it reads as absent.
"""

from __future__ import annotations

from modelyard.builders import drift
from modelyard.builders.labels import SPEC_HASH_ANNOTATION, TRACK_LABEL, WEIGHTS_ANNOTATION
from modelyard.kube import Manifest
from modelyard.weights import VERIFIER_CONTAINER

PREFIX = "modelyard.dev"
#: The parts of a container's status that `modelyard.status.model` reads.
_CONTAINER_FIELDS = ("name", "image", "ready", "started", "restartCount")


def _trim_container(container: Manifest) -> Manifest:
    kept = {key: container[key] for key in _CONTAINER_FIELDS if key in container}
    waiting = (container.get("state") or {}).get("waiting")
    if waiting:
        kept["state"] = {"waiting": waiting}
    terminated = (container.get("lastState") or {}).get("terminated")
    if terminated:
        kept["lastState"] = {
            "terminated": {
                k: terminated[k]
                for k in ("exitCode", "reason", "message", "startedAt", "finishedAt")
                if k in terminated
            }
        }
    return kept


def _trim_verifier(container: Manifest) -> Manifest:
    """The weights' init step: whether it refused, and its words (`modelyard.weights`)."""
    kept: Manifest = {"name": container.get("name")}
    for state in ("state", "lastState"):
        terminated = (container.get(state) or {}).get("terminated")
        if terminated:
            kept[state] = {
                "terminated": {
                    k: terminated[k] for k in ("exitCode", "reason", "message") if k in terminated
                }
            }
    waiting = (container.get("state") or {}).get("waiting")
    if waiting:
        kept["state"] = {"waiting": {k: waiting[k] for k in ("reason", "message") if k in waiting}}
    return kept


def trim_pod(pod: Manifest) -> Manifest:
    """Only what decides a Model's state, to keep memory flat with thousands of pods."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    annotations = meta.get("annotations") or {}
    trimmed: Manifest = drift.compact(
        {
            "metadata": {
                "name": meta.get("name"),
                "annotations": {SPEC_HASH_ANNOTATION: annotations.get(SPEC_HASH_ANNOTATION)},
                "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k == TRACK_LABEL},
                "deletionTimestamp": meta.get("deletionTimestamp"),
            },
            # Where the serving workers run: a new revision's weights are pulled there first.
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {
                # Ended pods (evicted, rejected) are no node a worker runs on.
                "phase": status.get("phase"),
                # A canary's pods are asked the probe on their own address.
                "podIP": status.get("podIP"),
                "conditions": [
                    {k: c.get(k) for k in ("type", "status", "reason", "message") if k in c}
                    for c in status.get("conditions") or []
                ],
                "containerStatuses": [
                    _trim_container(c) for c in status.get("containerStatuses") or []
                ],
            },
        }
    )
    verifier = [
        _trim_verifier(c)
        for c in status.get("initContainerStatuses") or []
        if c.get("name") == VERIFIER_CONTAINER
    ]
    if verifier:
        trimmed["status"]["initContainerStatuses"] = verifier
    return trimmed


def trim_warm_pod(pod: Manifest) -> Manifest:
    """A pod pulling weights onto a node (`builders.warming`): which weights, where, and
    whether it is done — and, while it is not, what its container waits on."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    waiting = [
        ((c.get("state") or {}).get("waiting") or {}).get("reason")
        for c in status.get("containerStatuses") or []
    ]
    # A scale-up's warming pod the scheduler has no room for: the scheduler's words.
    unschedulable = next(
        (
            str(c.get("message") or c.get("reason"))
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
        ),
        None,
    )
    trimmed: Manifest = drift.compact(
        {
            "metadata": {
                "name": meta.get("name"),
                # Its age bounds the wait for it, whatever the status records.
                "creationTimestamp": meta.get("creationTimestamp"),
                "annotations": {
                    WEIGHTS_ANNOTATION: (meta.get("annotations") or {}).get(WEIGHTS_ANNOTATION)
                },
                "deletionTimestamp": meta.get("deletionTimestamp"),
                # Ours only if the Model made it: a pod merely labelled so is left alone.
                "ownerReferences": [
                    {"uid": owner.get("uid")} for owner in meta.get("ownerReferences") or []
                ],
            },
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {
                "phase": status.get("phase"),
                "reason": status.get("reason"),
                "waiting": next((reason for reason in waiting if reason), None),
                "unschedulable": unschedulable,
                # Room being made for it by preemption: not "no room".
                "nominatedNodeName": status.get("nominatedNodeName"),
            },
        }
    )
    return trimmed


def trim_secret(secret: Manifest) -> Manifest:
    """A Secret's name only: its data is read when used, never kept."""
    metadata = secret.get("metadata") or {}
    return {"metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")}}


def trim_own(obj: Manifest) -> Manifest:
    """One of our objects as the stores keep it: without managedFields (the largest part of a
    real object) nor the copy of the whole spec that releases running on kopf annotated, its
    strings shared with the other kept objects (`drift.compact`)."""
    copied = dict(obj)
    metadata = dict(copied.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if annotations:
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if not k.startswith(f"{PREFIX}/last-handled")
        }
    copied["metadata"] = metadata
    compacted: Manifest = drift.compact(copied)
    return compacted


__all__ = ["trim_own", "trim_pod", "trim_secret", "trim_warm_pod"]
