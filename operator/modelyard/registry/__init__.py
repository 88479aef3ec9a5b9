"""Registry clients: OCI distribution (verification of digests) and MLflow (reachability)."""
