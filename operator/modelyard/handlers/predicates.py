"""Which events are worth a pass: the filters between an informer's event and the wake rules.

An informer tells every change it sees, and most of ours are not news: the status a pass just
wrote, a relist repeating what the store held, a template's status listing one more Model.
Passes are level-based, so a pass too many is only wasted work, never a wrong write; these
filters keep the waste from growing with the number of objects. What a change that passes them
wakes is `modelyard.reconcile.wakes`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.kube import Manifest
from modelyard.kube.written import Written

Key = tuple[str, str]


def echoes_our_write(written: Written, kind: str, key: Key, event: str, obj: Manifest) -> bool:
    """Whether the event only brings back what our own last write returned (a deletion never
    does): a pass for it would find nothing to do."""
    return event != "DELETED" and written.is_echo(kind, key, obj)


def template_fingerprint(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a template's Models read of it. Not its list of Models in its status: that
    changes with every Model created."""
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    verdicts = {
        c.get("type"): (c.get("status"), c.get("reason"))
        for c in status.get("conditions") or []
        if c.get("type") in ("Ready", "Signed")
    }
    return (
        metadata.get("generation"),
        metadata.get("deletionTimestamp"),
        status.get("resolvedDigest"),
        # Models of a template under a signature policy wait for its verdict on this spec.
        status.get("observedGeneration"),
        verdicts.get("Ready"),
        verdicts.get("Signed"),
    )


@dataclass
class Seen:
    """What the handlers remember of each of our objects to tell a change worth a pass from
    a status write or a relist: generation, deletion, a Model's template, and what a
    template's Models read of it."""

    generations: dict[tuple[str, Key], tuple[Any, Any]] = field(default_factory=dict)
    templates: dict[Key, str] = field(default_factory=dict)
    models_by_template: dict[Key, set[str]] = field(default_factory=dict)
    #: Each template's `template_fingerprint` as last seen. The runner's own mapping is passed
    #: in: it forgets a template's with the template.
    fingerprints: dict[Key, tuple[Any, ...]] = field(default_factory=dict)

    def changed(self, kind: str, key: Key, event: str, obj: Manifest) -> bool:
        """A new object, a new spec (generation), a deletion begun or done."""
        if event == "DELETED":
            self.generations.pop((kind, key), None)
            return True
        metadata = obj.get("metadata") or {}
        now = (metadata.get("generation"), bool(metadata.get("deletionTimestamp")))
        before = self.generations.get((kind, key))
        self.generations[(kind, key)] = now
        return before != now

    def template_of(self, key: Key, event: str, obj: Manifest) -> tuple[str | None, str | None]:
        """A Model's template before and after this event, its index kept up to date."""
        before = self.templates.get(key)
        after = None if event == "DELETED" else ((obj.get("spec") or {}).get("template") or None)
        if before == after:
            return before, after
        if before is not None:
            names = self.models_by_template.get((key[0], before))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self.models_by_template[(key[0], before)]
            del self.templates[key]
        if after is not None:
            self.templates[key] = after
            self.models_by_template.setdefault((key[0], after), set()).add(key[1])
        return before, after

    def template_changed_for_models(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Whether a template event changes anything its Models read.

        Its status also lists its Models, so it changes with every Model created: fanning out
        on each of those would reconcile every Model once per new Model — quadratic.
        """
        fingerprint = template_fingerprint(body)
        if self.fingerprints.get(key) == fingerprint:
            return False
        self.fingerprints[key] = fingerprint
        return True


__all__ = ["Seen", "echoes_our_write", "template_fingerprint"]
