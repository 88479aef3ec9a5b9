"""modelyard: a Kubernetes operator that serves custom ML models.

Layers (docs/design.md), each importing only those below it, enforced by import-linter:
cli → handlers, listing → reconcile, verify → render → builders → status → registry → kube →
api → config, metrics.
"""

__version__ = "0.1.0"
