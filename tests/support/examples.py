"""The manifests in examples/, for tests that start from a known-good object and break it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                label = f"{path.name}:{document['kind']}/{document['metadata']['name']}"
                documents.append((label, document))
    return documents


_DOCUMENTS = example_documents()


def example(kind: str, name: str) -> dict[str, Any]:
    """A fresh copy of one example document."""
    for _, document in _DOCUMENTS:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return copy.deepcopy(document)
    raise LookupError(f"no example {kind}/{name}")
