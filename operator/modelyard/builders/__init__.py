"""Pure builders: typed specs and operator configuration in, Kubernetes manifests out.

Nothing here does I/O, so the same functions serve the operator and `modelyard render`, and
every field of a template can be checked against the manifest it lands in without a cluster.
"""
