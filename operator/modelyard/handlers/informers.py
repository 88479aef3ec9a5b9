"""The informers, and what their events ask of the runner.

Everything the passes read is in memory, so a pass makes no GET requests: our own kinds and
the children (Deployments, Services, autoscalers, pods) and the consenting Secrets come from
informers (`modelyard.kube.informer`), trimmed to the fields the passes read
(`modelyard.handlers.trim`). The informers fill the runner's stores, and each event only says
"look again": it goes through the filters of `modelyard.handlers.predicates` and wakes what the
rules of `modelyard.reconcile.wakes` say, and nothing more. One informer per kind and watched
namespace (or one for all namespaces), their stores read across scopes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from modelyard.builders import drift
from modelyard.builders.labels import MANAGED_BY, MODEL_LABEL, WARMS_LABEL
from modelyard.handlers.predicates import Seen, echoes_our_write
from modelyard.handlers.trim import trim_own, trim_pod, trim_secret, trim_warm_pod
from modelyard.kube import Kube, Manifest, path
from modelyard.kube.informer import AcrossScopes, Informer, OwnerKey
from modelyard.reconcile import wakes
from modelyard.reconcile.model.world import WARM_PODS
from modelyard.reconcile.runner import Runner
from modelyard.registry.credentials import CONSENT_LABEL, CONSENT_VALUE

API_VERSION = "modelyard.dev/v1alpha1"
#: A CRD not installed yet is looked for this often (KEDA's, which is optional, less often).
OWN_KIND_RECHECK = 10.0
#: The kinds of child watched by an informer each, with their apiVersion.
WATCHED_CHILDREN: dict[str, str] = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ScaledObject": "keda.sh/v1alpha1",
    "Pod": "v1",
}
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def _by_name(obj: Manifest) -> OwnerKey:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace") or "default", metadata.get("name", ""))


def _by_namespace(obj: Manifest) -> OwnerKey:
    return ((obj.get("metadata") or {}).get("namespace") or "default", "")


class ByNamespace(Mapping[str, list[Manifest]]):
    """Registries and ModelVersions as the runner reads them: namespace → objects."""

    def __init__(self, store: AcrossScopes) -> None:
        self.store = store

    def __getitem__(self, namespace: str) -> list[Manifest]:
        return self.store[(namespace, "")]

    def __contains__(self, namespace: object) -> bool:
        return (namespace, "") in self.store

    def __iter__(self) -> Iterator[str]:
        for namespace, _ in self.store:
            yield namespace

    def __len__(self) -> int:
        return len(self.store)


def own_informers(runner: Runner, kube: Kube, scopes: list[str | None]) -> list[Informer]:
    """Informers of Models, ModelTemplates, Registries and ModelVersions; the runner's
    `indices` read their stores."""
    seen = Seen(fingerprints=runner.template_fingerprints)
    written = runner.written

    def model(event: str, key: OwnerKey, obj: Manifest) -> None:
        before, after = seen.template_of(key, event, obj)
        if event == "DELETED":
            written.forget("Model", key)
        itself = not echoes_our_write(written, "Model", key, event, obj)
        runner.wake(wakes.model_changed(key, before, after, itself=itself))

    def template(event: str, key: OwnerKey, obj: Manifest) -> None:
        echo = echoes_our_write(written, "ModelTemplate", key, event, obj)
        itself = seen.changed("ModelTemplate", key, event, obj) or not echo
        for_models = event == "DELETED" or seen.template_changed_for_models(key, obj)
        runner.wake(
            wakes.template_changed(runner.indices, key, itself=itself, for_models=for_models)
        )

    def registry(event: str, group: OwnerKey, obj: Manifest) -> None:
        key = _by_name(obj)
        itself = seen.changed("Registry", key, event, obj)
        runner.wake(wakes.registry_changed(runner.indices, key, itself=itself))

    def version(event: str, group: OwnerKey, obj: Manifest) -> None:
        key = _by_name(obj)
        itself = seen.changed("ModelVersion", key, event, obj)
        spec = dict(obj.get("spec") or {})
        runner.wake(wakes.version_changed(runner.indices, key, spec, itself=itself))

    handlers = {
        "Model": (model, _by_name),
        "ModelTemplate": (template, _by_name),
        "Registry": (registry, _by_namespace),
        "ModelVersion": (version, _by_namespace),
    }
    stores: dict[str, list[Informer]] = {}
    for kind, (on_change, group) in handlers.items():
        stores[kind] = [
            Informer(
                kube,
                path(API_VERSION, kind, namespace),
                "",
                group=group,
                trim=trim_own,
                on_change=on_change,
                absent_recheck=OWN_KIND_RECHECK,
                idle=runner.config.watch_idle_seconds,
            )
            for namespace in scopes
        ]
    runner.indices = {
        "model_bodies": AcrossScopes(stores["Model"]),
        "template_bodies": AcrossScopes(stores["ModelTemplate"]),
        "registry_bodies": ByNamespace(AcrossScopes(stores["Registry"])),
        "version_bodies": ByNamespace(AcrossScopes(stores["ModelVersion"])),
        "models_by_template": seen.models_by_template,
    }
    return [informer for each in stores.values() for informer in each]


def child_informers(runner: Runner, kube: Kube, scopes: list[str | None]) -> list[Informer]:
    """Informers of the children (by the Model in their label) and of the Secrets that consent
    to modelyard's use; the runner's `children` and `consenting` read their stores."""
    informers: dict[str, list[Informer]] = {}
    written = runner.written
    for kind, api_version in WATCHED_CHILDREN.items():

        def changed(event: str, owner: OwnerKey, obj: Manifest, kind: str = kind) -> None:
            if not owner[1]:
                return  # our label without a Model's name: not ours to reconcile
            if event == "DELETED":
                # By its own name: a Model's canary Deployment is not its Deployment.
                written.forget(kind, (owner[0], (obj.get("metadata") or {}).get("name", "")))
            elif echoes_our_write(written, kind, owner, event, obj):
                return
            runner.wake(wakes.child_changed(owner))

        informers[kind] = [
            Informer(
                kube,
                path(api_version, kind, namespace),
                SELECTOR,
                owner_label=MODEL_LABEL,
                trim=trim_pod if kind == "Pod" else drift.packed,
                on_change=changed,
                idle=runner.config.watch_idle_seconds,
            )
            for namespace in scopes
        ]

    def warm_pod_changed(event: str, owner: OwnerKey, obj: Manifest) -> None:
        if owner[1]:
            runner.wake(wakes.child_changed(owner))

    # Few and short-lived, so every change is a pass: the one that ends warming starts the
    # rollout it held back.
    informers[WARM_PODS] = [
        Informer(
            kube,
            path("v1", "Pod", namespace),
            WARMS_LABEL,
            owner_label=WARMS_LABEL,
            trim=trim_warm_pod,
            on_change=warm_pod_changed,
            idle=runner.config.watch_idle_seconds,
        )
        for namespace in scopes
    ]
    runner.children = {kind: AcrossScopes(each) for kind, each in informers.items()}

    def secret_changed(event: str, owner: OwnerKey, obj: Manifest) -> None:
        name = (obj.get("metadata") or {}).get("name", "")
        runner.wake(wakes.secret_changed(runner.indices, owner[0], name, event))

    # Only the Secrets whose owners let modelyard use them, and of those only their names:
    # the thousands of other Secrets of a cluster (Helm releases, service account tokens)
    # cost the operator no memory and no passes. Their data is read when used.
    secrets = [
        Informer(
            kube,
            path("v1", "Secret", namespace),
            f"{CONSENT_LABEL}={CONSENT_VALUE}",
            owner_label=CONSENT_LABEL,
            trim=trim_secret,
            on_change=secret_changed,
            idle=runner.config.watch_idle_seconds,
        )
        for namespace in scopes
    ]
    runner.consenting = AcrossScopes(secrets)
    return [informer for each in [*informers.values(), secrets] for informer in each]


__all__ = ["ByNamespace", "child_informers", "own_informers"]
