"""One idempotent reconcile per kind: read dependencies, plan, apply, write status."""
