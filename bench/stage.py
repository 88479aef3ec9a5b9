"""The stage: the project's control plane with its audit log on, and an identity of its own for
each program measured, so the server itself can tell whose every request was.

The HPA controller is left out of the controller-manager (thousands of HPAs without a metrics API
would load the machine, for nothing any operator does); BENCH_CONTROLLERS=a,b overrides the list,
to see what the controllers' work costs the operators.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from audit import AUDIT_POLICY

from support import control_plane
from support.api import Api
from support.audit import AuditLog, server_args
from support.cluster import OPERATOR_NAMESPACE, operator_identity, service_account_token

CONTROLLERS = (
    "garbage-collector-controller,deployment-controller,replicaset-controller,"
    "namespace-controller,serviceaccount-controller,resourcequota-controller"
)
#: The other identities: each a ServiceAccount bound to cluster-admin.
BASELINE_ACCOUNTS = {"naive": "naive-kopf", "same-job": "same-job-kopf", "floor": "floor"}


def start(work: Path) -> tuple[control_plane.ControlPlane, AuditLog]:
    """tests/cluster's control plane in `work`, logging what AUDIT_POLICY asks to work/audit.log."""
    policy = work / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit = work / "audit.log"
    plane = control_plane.start(
        work / "cluster",
        [
            *server_args(policy, audit),
            f"--controllers={os.environ.get('BENCH_CONTROLLERS', CONTROLLERS)}",
        ],
    )
    return plane, AuditLog(audit)


def identities(api: Api, work: Path) -> dict[str, str]:
    """A token per program: ours the chart's ServiceAccount and ClusterRole (what it runs with),
    each baseline a cluster-admin ServiceAccount of its own."""
    tokens = {"ours": operator_identity(api, work)}
    for key, account in BASELINE_ACCOUNTS.items():
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": OPERATOR_NAMESPACE},
            }
        )
        api.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": account},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": account, "namespace": OPERATOR_NAMESPACE}
                ],
            }
        )
        tokens[key] = service_account_token(api, OPERATOR_NAMESPACE, account)
    return tokens


def kubeconfig(plane: control_plane.ControlPlane, token: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "bench",
                        "cluster": {
                            "server": plane.server,
                            "certificate-authority": str(plane.pki / "ca.crt"),
                        },
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "bench", "context": {"cluster": "bench", "user": "operator"}}
                ],
                "current-context": "bench",
            }
        )
    )
    return path
