"""modelyard: a Kubernetes operator that serves custom ML models.

Layers (DESIGN.md §3), each importing only those below it, enforced by import-linter:
handlers → reconcile → builders → status → registry → kube → api → config.
"""

__version__ = "0.1.0"
