"""An emulated Kubernetes API for operator-process tests: kmock 0.8 plus the semantics it lacks.

kmock brings the HTTP server, request parsing and API discovery. Its object store is too
simple for an operator that relies on Kubernetes semantics, so requests for resources are served
here instead. Each rule below fixes a gap of kmock 0.8 listed in shared/notes/testing.md, and
where the emulator approximates Kubernetes the comment says how; the principle is to make the
emulator faithful where the operator relies on a behaviour, never to bend the operator to it.

- objects get `uid`, `resourceVersion`, `creationTimestamp` and `generation` (kmock: none);
  `generation` moves only when something outside metadata and status changes;
- list answers the real resourceVersion, and watch resumes from `?resourceVersion=` by replaying
  the event log (kmock: dummy version, snapshot race); a version older than the log is 410 Gone;
- status subresource semantics: the object endpoint ignores `status`, `/status` ignores all but
  `status` (kmock: both change everything);
- merge patch (RFC 7386), JSON patch (RFC 6902; a failed `test` is 422, not 500), strategic merge
  approximated as merge with named-list merging, and server-side apply: create-or-merge, with
  per-manager field ownership so fields a manager stops sending are removed unless another
  manager owns them (kmock: 404 on apply of a missing object, no removal);
- duplicate create is 409 AlreadyExists; a `metadata.resourceVersion` precondition that does
  not match is 409 Conflict; a no-op write changes nothing and emits no event;
- deletion honours finalizers, and completed deletions garbage-collect dependents through
  `ownerReferences` uids, as the garbage collector does in the background;
- faults can be injected per method and path: any status, `Retry-After`, delays, dropped watches.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import datetime
import functools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import parsing as kmock_parsing

Obj = dict[str, Any]
Path = tuple[str, ...]

_parse_path = kmock_parsing.parse_path
_NAMESPACES = re.compile(
    r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|finalize))?/?$"
)


def _parse_path_with_namespaces(path: str) -> Any:
    """kmock 0.8 reads `/api/v1/namespaces` as a namespace prefix with no name and fails (500),
    so `kubectl create namespace` and `kopf run -n` cannot work; namespaces are a cluster-scoped
    resource of their own."""
    match = _NAMESPACES.match(path)
    if match:
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, match["name"], match["sub"])
    return _parse_path(path)


kmock_parsing.parse_path = _parse_path_with_namespaces

EVENT_LOG_LIMIT = 50_000

#: (group/version/plural) → (Kind, namespaced, has status subresource)
RESOURCES: dict[str, tuple[str, bool, bool]] = {
    "v1/pods": ("Pod", True, True),
    "v1/services": ("Service", True, True),
    "v1/secrets": ("Secret", True, False),
    "v1/events": ("Event", True, False),
    "v1/namespaces": ("Namespace", False, True),
    "apps/v1/deployments": ("Deployment", True, True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True, True),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False, True),
    "modelyard.dev/v1alpha1/models": ("Model", True, True),
    "modelyard.dev/v1alpha1/modeltemplates": ("ModelTemplate", True, True),
    "modelyard.dev/v1alpha1/modelversions": ("ModelVersion", True, True),
    "modelyard.dev/v1alpha1/registries": ("Registry", True, True),
}
KEDA = {"keda.sh/v1alpha1/scaledobjects": ("ScaledObject", True, True)}

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class ApiRefusal(Exception):  # noqa: N818 -- it is the answer, not our error
    def __init__(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.headers = code, reason, message, headers or {}


@dataclass
class Fault:
    """Answer matching requests with `code` (or delay them), `times` times (None: forever)."""

    method: str
    path: re.Pattern[str]
    code: int = 500
    times: int | None = 1
    retry_after: int | None = None
    delay: float = 0.0
    hits: int = 0


# -- patch semantics --------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named(items: Any) -> bool:
    return (
        isinstance(items, list)
        and bool(items)
        and all(isinstance(i, dict) and "name" in i for i in items)
    )


def apply_merge(target: Any, patch: Any) -> Any:
    """Server-side-apply / strategic-merge approximation: maps merge, named lists merge by name."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            result[key] = apply_merge(result.get(key), value)
        return result
    if _named(patch) and _named(target):
        by_name = {item["name"]: item for item in target}
        merged = []
        for item in patch:
            merged.append(apply_merge(by_name.pop(item["name"], None), item))
        # Items another manager added (an injected sidecar) stay, after ours.
        merged.extend(by_name.values())
        return merged
    return copy.deepcopy(patch)


def field_paths(value: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths a manager sets; named list items are addressed by name, other lists atomic."""
    if isinstance(value, dict) and value:
        paths: set[Path] = set()
        for key, child in value.items():
            paths |= field_paths(child, (*prefix, key))
        return paths
    if _named(value):
        paths = set()
        for item in value:
            paths |= field_paths(item, (*prefix, f"[name={item['name']}]"))
        return paths
    return {prefix}


def remove_path(obj: Any, path: Path) -> None:
    node = obj
    for part in path[:-1]:
        if isinstance(node, list) and part.startswith("[name="):
            name = part[6:-1]
            node = next((i for i in node if isinstance(i, dict) and i.get("name") == name), None)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            node = None
        if node is None:
            return
    last = path[-1]
    if isinstance(node, dict):
        node.pop(last, None)
    elif isinstance(node, list) and last.startswith("[name="):
        node[:] = [i for i in node if not (isinstance(i, dict) and i.get("name") == last[6:-1])]


def prune_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])} if pruned else pruned
    return value


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902; a failed `test` is 422 as on a real apiserver (kmock 0.8 answered 500)."""
    doc = copy.deepcopy(target)

    def split(pointer: str) -> list[str]:
        return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]

    def parent(parts: list[str]) -> tuple[Any, str]:
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(parts: list[str]) -> Any:
        node: Any = doc
        for part in parts:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    for operation in operations:
        op = dict(operation)
        parts = split(op["path"])
        try:
            kind = op["op"]
            if kind == "test":
                if get(parts) != op.get("value"):
                    raise ApiRefusal(422, "Invalid", f"test operation failed at {op['path']}")
                continue
            if kind in ("move", "copy"):
                value = copy.deepcopy(get(split(op["from"])))
                if kind == "move":
                    node, key = parent(split(op["from"]))
                    del node[int(key) if isinstance(node, list) else key]
                op = {"op": "add", "path": op["path"], "value": value}
                kind = "add"
            node, key = parent(parts)
            if kind == "remove":
                del node[int(key) if isinstance(node, list) else key]
            elif isinstance(node, list):
                index = len(node) if key == "-" else int(key)
                if kind == "add":
                    node.insert(index, copy.deepcopy(op["value"]))
                else:
                    node[index] = copy.deepcopy(op["value"])
            else:
                if kind == "replace" and key not in node:
                    raise ApiRefusal(422, "Invalid", f"replace of missing {op['path']}")
                node[key] = copy.deepcopy(op["value"])
        except (KeyError, IndexError, ValueError, TypeError) as error:
            raise ApiRefusal(422, "Invalid", f"JSON patch {op} failed: {error}") from None
    return doc


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for raw_term in selector.split(","):
        term = raw_term.strip()
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# -- the emulator -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """A faithful-enough Kubernetes API; select it with `pytest.mark.kmock(cls=Cluster)`."""

    keda: bool = True
    store: dict[tuple[str, str | None, str], Obj] = attrs.field(factory=dict, init=False)
    owners: dict[tuple[str, str | None, str], dict[str, set[Path]]] = attrs.field(
        factory=dict, init=False
    )
    log: list[tuple[int, str, Obj]] = attrs.field(factory=list, init=False)
    version: int = attrs.field(default=1000, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    served: list[tuple[str, str, int]] = attrs.field(factory=list, init=False)
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, (kind, namespaced, status) in self.kinds().items():
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs=VERBS,
                subresources=["status"] if status else [],
            )

    def kinds(self) -> dict[str, tuple[str, bool, bool]]:
        return {**RESOURCES, **(KEDA if self.keda else {})}

    # -- inspection helpers for tests ---------------------------------------------------------

    def get(self, resource: str, namespace: str | None, name: str) -> Obj | None:
        found = self.store.get((resource, namespace, name))
        return copy.deepcopy(found) if found else None

    def list(self, resource: str, namespace: str | None = None) -> list[Obj]:
        return [
            copy.deepcopy(o)
            for (r, ns, _), o in sorted(self.store.items(), key=lambda kv: str(kv[0]))
            if r == resource and (namespace is None or ns == namespace)
        ]

    def writes(self) -> list[tuple[str, str, int]]:
        return [entry for entry in self.served if entry[0] not in ("GET",)]

    def fail(
        self,
        method: str,
        path: str,
        code: int = 500,
        *,
        times: int | None = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
    ) -> Fault:
        fault = Fault(method.upper(), re.compile(path), code, times, retry_after, delay)
        self.faults.append(fault)
        return fault

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.drop_watches()  # open watch streams would hold the server's shutdown
        await super().__aexit__(*exc_info)

    async def expire_history(self) -> None:
        """Forget the event log and close watches: every resume is then 410 Gone, as after an
        etcd compaction, and clients must list again."""
        self.log.clear()
        self.version += 1
        await self.drop_watches()

    async def drop_watches(self) -> None:
        """Close every open watch stream, as an apiserver restart or a load balancer would."""
        self._watch_epoch += 1
        async with self._changed:
            self._changed.notify_all()

    # -- writes usable by tests playing controllers (kubelet, Deployment controller) ------------

    async def create(self, resource: str, obj: Obj, manager: str = "test") -> Obj:
        namespace = (obj.get("metadata") or {}).get("namespace")
        return await self._create(resource, namespace, copy.deepcopy(obj), manager)

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        *,
        subresource: str | None = None,
        manager: str = "test",
    ) -> Obj:
        return await self._update(
            resource,
            namespace,
            name,
            subresource,
            manager,
            lambda current: merge_patch(current, patch),
            patch,
        )

    async def remove(self, resource: str, namespace: str | None, name: str) -> None:
        await self._delete(resource, namespace, name)

    # -- request dispatch ---------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        resource = "/".join(
            p
            for p in (request.resource.group, request.resource.version, request.resource.plural)
            if p
        )
        method = str(
            request.method.value if hasattr(request.method, "value") else request.method
        ).upper()
        if resource not in self.kinds():
            return await super()._handle(request)  # discovery of unknown groups: kmock's 404s
        try:
            response = await self._serve(request, resource, method)
        except ApiRefusal as failure:
            response = aiohttp.web.json_response(
                status_body(failure.code, failure.reason, failure.message),
                status=failure.code,
                headers=failure.headers,
            )
        watching = str(request.params.get("watch")) in ("true", "1")
        self.served.append(
            (method, request.url.path + ("?watch" if watching else ""), response.status)
        )
        return response

    async def _inject(self, method: str, path: str) -> None:
        for fault in self.faults:
            if (
                fault.method in (method, "*")
                and fault.path.search(path)
                and (fault.times is None or fault.hits < fault.times)
            ):
                fault.hits += 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.code:
                    headers = (
                        {"Retry-After": str(fault.retry_after)}
                        if fault.retry_after is not None
                        else {}
                    )
                    raise ApiRefusal(fault.code, "Injected", f"injected {fault.code}", headers)
                return

    async def _serve(
        self, request: kmock.Request, resource: str, method: str
    ) -> aiohttp.web.StreamResponse:
        params = dict(request.params)
        await self._inject(
            method, request.url.path + ("?watch" if params.get("watch") == "true" else "")
        )
        namespace, name, sub = request.namespace, request.name, request.subresource
        manager = params.get("fieldManager", "unknown")
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, resource, namespace, params)
        if method == "GET" and name is None:
            return aiohttp.web.json_response(self._list(resource, namespace, params))
        if method == "GET":
            return aiohttp.web.json_response(self._fetch(resource, namespace, name))
        if method == "POST":
            return aiohttp.web.json_response(
                await self._create(resource, namespace, self._body(request), manager), status=201
            )
        if method == "DELETE" and name is not None:
            return aiohttp.web.json_response(await self._delete(resource, namespace, name))
        if method in ("PATCH", "PUT") and name is not None:
            existed = (resource, namespace, name) in self.store
            written = await self._write(request, resource, namespace, name, sub, manager)
            # An apply that creates answers 201, as the apiserver does (and RBAC then needs create).
            return aiohttp.web.json_response(written, status=200 if existed else 201)
        raise ApiRefusal(405, "MethodNotAllowed", f"{method} {request.url.path}")

    @staticmethod
    def _body(request: kmock.Request) -> Any:
        if request.data is not None:
            return copy.deepcopy(request.data)
        text = request.body.decode() if request.body else ""
        return yaml.safe_load(text) if text else {}

    # -- reads --------------------------------------------------------------------------------

    def _fetch(self, resource: str, namespace: str | None, name: str) -> Obj:
        found = self.store.get((resource, namespace, name))
        if found is None:
            raise ApiRefusal(404, "NotFound", f'{resource} "{name}" not found')
        return copy.deepcopy(found)

    def _matching(
        self, resource: str, namespace: str | None, selector: str | None
    ) -> Iterator[Obj]:
        for (r, ns, _), obj in self.store.items():
            if (
                r == resource
                and (namespace is None or ns == namespace)
                and selector_matches(selector, (obj.get("metadata") or {}).get("labels") or {})
            ):
                yield obj

    def _list(self, resource: str, namespace: str | None, params: dict[str, str]) -> Obj:
        kind = self.kinds()[resource][0]
        items = [
            copy.deepcopy(o)
            for o in self._matching(resource, namespace, params.get("labelSelector"))
        ]
        return {
            "apiVersion": resource.rsplit("/", 1)[0],
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self.version)},
            "items": items,
        }

    async def _watch(
        self, request: kmock.Request, resource: str, namespace: str | None, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        selector = params.get("labelSelector")
        epoch = self._watch_epoch
        deadline = asyncio.get_running_loop().time() + float(params.get("timeoutSeconds") or 3600)

        async def send(event: Obj) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        try:
            since = params.get("resourceVersion")
            if not since or since == "0":
                # No version: the current state first, as ADDED events (a real apiserver does too).
                last = self.version
                for obj in list(self._matching(resource, namespace, selector)):
                    await send({"type": "ADDED", "object": copy.deepcopy(obj)})
            else:
                last = int(since)
                oldest = self.log[0][0] if self.log else self.version + 1
                if last < oldest - 1:
                    await send(
                        {
                            "type": "ERROR",
                            "object": status_body(410, "Expired", "too old resource version"),
                        }
                    )
                    return response
            while self._watch_epoch == epoch:
                # The log is in version order: start right after `last`, not from the beginning.
                start = bisect.bisect_right(self.log, last, key=lambda entry: entry[0])
                for version, event_resource, event in self.log[start:]:
                    last = version
                    obj = event["object"]
                    metadata = obj.get("metadata") or {}
                    if (
                        event_resource == resource
                        and (namespace is None or metadata.get("namespace") == namespace)
                        and selector_matches(selector, metadata.get("labels") or {})
                    ):
                        await send(event)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or raw.transport is None or raw.transport.is_closing():
                    break
                async with self._changed:
                    try:
                        await asyncio.wait_for(
                            self._changed.wait_for(functools.partial(self._news, last, epoch)),
                            # Wake up now and then to notice a client that went away.
                            timeout=min(remaining, 0.5),
                        )
                    except TimeoutError:
                        continue
        except (ConnectionResetError, asyncio.CancelledError):
            return response
        return response

    def _news(self, since: int, epoch: int) -> bool:
        return self.version > since or self._watch_epoch != epoch

    # -- writes -------------------------------------------------------------------------------

    async def _emit(self, resource: str, kind: str, obj: Obj) -> None:
        self.log.append((self.version, resource, {"type": kind, "object": copy.deepcopy(obj)}))
        if len(self.log) > EVENT_LOG_LIMIT * 2:
            del self.log[:-EVENT_LOG_LIMIT]  # in batches: trimming on every event is quadratic
        async with self._changed:
            self._changed.notify_all()

    def _stamp(self, obj: Obj) -> None:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)

    async def _create(self, resource: str, namespace: str | None, obj: Obj, manager: str) -> Obj:
        if not isinstance(obj, dict):
            raise ApiRefusal(400, "BadRequest", "object expected")
        kind, namespaced, has_status = self.kinds()[resource]
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        name = metadata.get("name")
        if not name:
            raise ApiRefusal(422, "Invalid", "metadata.name: Required value")
        namespace = (namespace or metadata.get("namespace")) if namespaced else None
        key = (resource, namespace, name)
        if key in self.store:
            raise ApiRefusal(409, "AlreadyExists", f'{resource} "{name}" already exists')
        if namespaced:
            metadata["namespace"] = namespace
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        metadata.pop("deletionTimestamp", None)
        if has_status:
            obj.pop("status", None)  # status is not settable on create with a status subresource
        obj.setdefault("apiVersion", resource.rsplit("/", 1)[0])
        obj.setdefault("kind", kind)
        self._stamp(obj)
        self.store[key] = obj
        self.owners[key] = {manager: field_paths({k: v for k, v in obj.items() if k != "status"})}
        await self._emit(resource, "ADDED", obj)
        return copy.deepcopy(obj)

    async def _write(
        self,
        request: kmock.Request,
        resource: str,
        namespace: str | None,
        name: str,
        sub: str | None,
        manager: str,
    ) -> Obj:
        body = self._body(request)
        content_type = request.headers.get("Content-Type", "")
        method = str(
            request.method.value if hasattr(request.method, "value") else request.method
        ).upper()
        key = (resource, namespace, name)
        if "apply-patch" in content_type:
            if key not in self.store:
                # Server-side apply creates what is missing (kmock 0.8 answered 404).
                return await self._create(resource, namespace, body, manager)
            return await self._update(
                resource,
                namespace,
                name,
                sub,
                manager,
                lambda current: self._apply(key, current, body, manager),
                body,
            )
        if method == "PUT":
            return await self._update(
                resource, namespace, name, sub, manager, lambda _current: body, body
            )
        if "json-patch" in content_type:
            return await self._update(
                resource,
                namespace,
                name,
                sub,
                manager,
                lambda current: json_patch(current, body),
                None,
            )
        if "strategic-merge" in content_type:
            return await self._update(
                resource,
                namespace,
                name,
                sub,
                manager,
                lambda current: apply_merge(current, body),
                body,
            )
        return await self._update(
            resource,
            namespace,
            name,
            sub,
            manager,
            lambda current: merge_patch(current, body),
            body,
        )

    def _apply(
        self, key: tuple[str, str | None, str], current: Obj, body: Obj, manager: str
    ) -> Obj:
        owners = self.owners.setdefault(key, {})
        sent = field_paths({k: v for k, v in body.items() if k not in ("status",)})
        others = (
            set().union(*(paths for m, paths in owners.items() if m != manager))
            if owners
            else set()
        )
        result = copy.deepcopy(current)
        for stale in owners.get(manager, set()) - sent - others:
            if stale[0] == "metadata" and stale[1:2] in (("name",), ("namespace",)):
                continue
            remove_path(result, stale)
        result = prune_empty(apply_merge(result, body))
        return result

    def _take_ownership(self, key: tuple[str, str | None, str], manager: str, patch: Any) -> None:
        if not isinstance(patch, dict):
            return
        paths = field_paths(patch)
        owners = self.owners.setdefault(key, {})
        for other, owned in owners.items():
            if other != manager:
                owned -= {p for p in owned if any(p[: len(q)] == q for q in paths)}
        owners.setdefault(manager, set()).update(paths)

    async def _update(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        sub: str | None,
        manager: str,
        change: Any,
        patch: Any,
    ) -> Obj:
        key = (resource, namespace, name)
        current = self.store.get(key)
        if current is None:
            raise ApiRefusal(404, "NotFound", f'{resource} "{name}" not found')
        _, _, has_status = self.kinds()[resource]
        wanted_version = (
            ((patch or {}).get("metadata") or {}).get("resourceVersion")
            if isinstance(patch, dict)
            else None
        )
        if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
            raise ApiRefusal(
                409,
                "Conflict",
                "the object has been modified; please apply your changes "
                "to the latest version and try again",
            )
        changed = change(copy.deepcopy(current))
        if not isinstance(changed, dict):
            raise ApiRefusal(422, "Invalid", "the patch did not produce an object")
        if sub == "status":
            result = {**copy.deepcopy(current), "status": changed.get("status")}
            if result["status"] is None:
                result.pop("status")
        else:
            result = changed
            if has_status:
                # Status only changes through /status (kmock 0.8 let any patch change it).
                result.pop("status", None)
                if "status" in current:
                    result["status"] = copy.deepcopy(current["status"])
        metadata = result.setdefault("metadata", {})
        for immutable in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
        ):
            if immutable in current["metadata"]:
                metadata[immutable] = current["metadata"][immutable]
            else:
                metadata.pop(immutable, None)
        metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        if result == current:
            return copy.deepcopy(current)  # a no-op write changes nothing and emits no event

        def essence(obj: Obj) -> Obj:
            return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

        if essence(result) != essence(current):
            metadata["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if sub is None and patch is not None:
            self._take_ownership(
                key,
                manager,
                {k: v for k, v in patch.items() if k != "status"}
                if isinstance(patch, dict)
                else patch,
            )
        self._stamp(result)
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            await self._finish_deletion(resource, key, result)
            return copy.deepcopy(result)
        self.store[key] = result
        await self._emit(resource, "MODIFIED", result)
        return copy.deepcopy(result)

    async def _delete(self, resource: str, namespace: str | None, name: str) -> Obj:
        key = (resource, namespace, name)
        current = self.store.get(key)
        if current is None:
            raise ApiRefusal(404, "NotFound", f'{resource} "{name}" not found')
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                current = copy.deepcopy(current)
                current["metadata"]["deletionTimestamp"] = now()
                self._stamp(current)
                self.store[key] = current
                await self._emit(resource, "MODIFIED", current)
            return copy.deepcopy(current)
        await self._finish_deletion(resource, key, current)
        return copy.deepcopy(current)

    async def _finish_deletion(
        self, resource: str, key: tuple[str, str | None, str], obj: Obj
    ) -> None:
        self.store.pop(key, None)
        self.owners.pop(key, None)
        self.version += 1
        await self._emit(resource, "DELETED", obj)
        # The garbage collector: dependents whose owner is gone are deleted too.
        uid = obj["metadata"].get("uid")
        for (r, ns, n), dependent in list(self.store.items()):
            references = (dependent.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in references) and (r, ns, n) in self.store:
                await self._delete(r, ns, n)
