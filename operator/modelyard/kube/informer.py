"""List-then-watch of one kind, kept as a small in-memory store: the operator's only reads.

Every kind the operator reads — its own four and the children (Deployments, Services,
autoscalers, pods) — is watched here. An event costs a JSON parse, a trim to the fields the
reconcilers read, and one callback; a general framework (kopf, which this replaced) ran a
worker, handler bookkeeping and a copy of every body per object, about 95 KB per object.
Children are listed and watched with our label only (a server-side label selector), so other
workloads in the cluster cost nothing.

A watch that ends is resumed from the last resourceVersion seen (bookmarks keep it current in
quiet periods); one the server can no longer resume (410 Gone) is replaced by a fresh list, whose
differences from the store are reported as events — an object the store did not hold as ADDED,
one whose resourceVersion moved as MODIFIED, one gone as DELETED, and nothing for the rest — so
nothing is missed, nothing unchanged wakes anyone, and what appeared during the gap (a Secret
that began to consent) is told as the new object it is.

A watch that goes silent — a half-open connection after an API server instance or a load
balancer went away, NAT state flushed — raises nothing by itself. The server sends a bookmark
at least every minute on a quiet watch, so one that brings nothing for `idle` seconds is dead:
it is closed and resumed from its last resourceVersion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping

from modelyard.kube.client import Kube, Manifest
from modelyard.kube.errors import ApiError

logger = logging.getLogger(__name__)

#: (namespace, owner name) → {object name → trimmed object}
OwnerKey = tuple[str, str]
Group = Callable[[Manifest], OwnerKey]
Trim = Callable[[Manifest], Manifest]
OnChange = Callable[[str, OwnerKey, Manifest], None]

PAGE = 500
RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)
#: A kind the server does not serve (KEDA not installed) is looked for again this often.
ABSENT_RECHECK = 60.0
#: A watch that brings nothing (not even a bookmark) for this long is taken for dead.
WATCH_IDLE = 90.0


class Informer:
    """One kind, one scope (a namespace or the whole cluster), one label selector."""

    def __init__(
        self,
        kube: Kube,
        url: str,
        selector: str,
        *,
        trim: Trim,
        on_change: OnChange,
        owner_label: str | None = None,
        group: Group | None = None,
        absent_recheck: float = ABSENT_RECHECK,
        idle: float = WATCH_IDLE,
    ) -> None:
        """Objects are grouped by the value of `owner_label` (children: by their Model), or
        by `group` of the object."""
        self.kube = kube
        self.url = url
        self.selector = selector
        self.owner_label = owner_label
        self.group = group
        self.absent_recheck = absent_recheck
        self.idle = idle
        self.trim = trim
        self.on_change = on_change
        self.by_owner: dict[OwnerKey, dict[str, Manifest]] = {}
        self._owners: dict[tuple[str, str], OwnerKey] = {}  # (namespace, name) → owner
        #: (namespace, name) → resourceVersion held: what a relist compares with.
        self._versions: dict[tuple[str, str], str] = {}
        self.synced = asyncio.Event()
        self._version = ""
        #: The current watch brought an event (a bookmark included).
        self._delivered = False

    def _owner(self, obj: Manifest) -> tuple[tuple[str, str], OwnerKey]:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        where = (namespace, metadata.get("name", ""))
        if self.group is not None:
            return where, self.group(obj)
        labels = metadata.get("labels") or {}
        return where, (namespace, labels.get(self.owner_label or "", ""))

    def _put(self, event_type: str, obj: Manifest) -> None:
        where, owner = self._owner(obj)
        if event_type == "DELETED":
            siblings = self.by_owner.get(owner)
            if siblings is not None:
                siblings.pop(where[1], None)
                if not siblings:
                    del self.by_owner[owner]
        else:
            previous = self._owners.get(where)
            if previous is not None and previous != owner:
                # Relabelled by hand (or regrouped): gone from where it belonged.
                before = self.by_owner.get(previous, {}).get(where[1]) or obj
                self._put("DELETED", self._as_in(before, where, previous))
            self._owners[where] = owner
            self.by_owner.setdefault(owner, {})[where[1]] = self.trim(obj)
        self.on_change(event_type, owner, obj)
        # Only once told: a change (or a deletion) whose callback failed is told again by the
        # relist that the failure starts.
        if event_type == "DELETED":
            self._owners.pop(where, None)
            self._versions.pop(where, None)
        else:
            self._versions[where] = str((obj.get("metadata") or {}).get("resourceVersion") or "")

    def _as_in(self, obj: Manifest, where: tuple[str, str], owner: OwnerKey) -> Manifest:
        """`obj` as it was when it belonged to `owner` (for a deletion from there)."""
        metadata = {**(obj.get("metadata") or {}), "namespace": where[0], "name": where[1]}
        if self.owner_label is not None:
            metadata["labels"] = {**(metadata.get("labels") or {}), self.owner_label: owner[1]}
        return {**obj, "metadata": metadata}

    async def _relist(self) -> None:
        """A full list, told as the differences from the store: new objects ADDED, changed
        ones MODIFIED, those it no longer holds DELETED, the unchanged not at all."""
        seen: set[tuple[str, str]] = set()
        query = {"labelSelector": self.selector, "limit": str(PAGE)}
        while True:
            page = await self.kube.list(self.url, query)
            for item in page.get("items") or []:
                # List items carry no kind of their own.
                item.setdefault("apiVersion", page.get("apiVersion"))
                item.setdefault("kind", str(page.get("kind", "")).removesuffix("List"))
                where = self._owner(item)[0]
                seen.add(where)
                version = (item.get("metadata") or {}).get("resourceVersion")
                if where not in self._owners:
                    self._put("ADDED", item)
                elif not version or self._versions.get(where) != version:
                    self._put("MODIFIED", item)
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                self._version = metadata.get("resourceVersion", "")
                break
            query = {**query, "continue": metadata["continue"]}
        for where, owner in list(self._owners.items()):
            if where not in seen:
                gone = self.by_owner.get(owner, {}).get(where[1]) or {"metadata": {}}
                self._put("DELETED", self._as_in(gone, where, owner))

    async def run(self) -> None:
        """Forever: list, watch, resume; cancelled when the operator stops."""
        failures = 0
        must_list = True
        while True:
            try:
                if must_list:
                    await self._relist()
                    must_list = False
                    self.synced.set()
                await self._watch()
                failures = 0
            except ApiError as problem:
                worked, self._delivered = self._delivered, False
                if worked:
                    failures = 0  # it worked for a while: a silent end is not a failure streak
                if problem.status == 410:
                    must_list = True  # too old to resume: start over from a list
                    continue
                if problem.status == 404:
                    if not self.synced.is_set():
                        logger.info(
                            "%s is not served; looking again every %.0f s",
                            self.url,
                            self.absent_recheck,
                        )
                    self.synced.set()  # nothing to wait for: the kind is not served
                    await asyncio.sleep(self.absent_recheck)
                    must_list = True
                    continue
                delay = problem.retry_after or RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                logger.warning("watching %s: %s; again in %.1f s", self.url, problem, delay)
                await asyncio.sleep(delay)
            except Exception:
                # Anything else (a line that is not JSON, a bug): an informer that stopped would
                # leave every Model's status frozen, so it starts over from a list instead.
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                logger.exception("watching %s failed; listing again in %.1f s", self.url, delay)
                must_list = True
                await asyncio.sleep(delay)

    async def _watch(self) -> None:
        self._delivered = False
        query = {
            "labelSelector": self.selector,
            "resourceVersion": self._version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "600",
        }
        async for event in self.kube.watch(self.url, query, idle=self.idle):
            event_type, obj = event.get("type"), event.get("object") or {}
            if event_type == "ERROR":
                raise ApiError(
                    int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message"))
                )
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                self._version = version
            self._delivered = True
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                self._put(str(event_type), obj)


class AcrossScopes(Mapping[OwnerKey, list[Manifest]]):
    """One kind's informers (one per namespace served, or one for the cluster) seen as one
    store, shaped as the reconcilers read kopf's indices: owner → [objects]."""

    def __init__(self, informers: list[Informer]) -> None:
        self.informers = informers

    def __getitem__(self, key: OwnerKey) -> list[Manifest]:
        for informer in self.informers:
            found = informer.by_owner.get(key)
            if found:
                return list(found.values())
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(key in informer.by_owner for informer in self.informers)

    def __iter__(self) -> Iterator[OwnerKey]:
        for informer in self.informers:
            yield from informer.by_owner

    def __len__(self) -> int:
        return sum(len(informer.by_owner) for informer in self.informers)


__all__ = ["AcrossScopes", "Informer", "OwnerKey"]
