"""What an external Model becomes: at most a Service of type ExternalName, named after it.

The model runs elsewhere, so there is no Deployment and no autoscaler; the Service only lets
in-cluster clients reach either kind of Model by `http://<model>.<namespace>.svc`. An
ExternalName is a DNS alias (a CNAME), so a URL naming an IP address gets no Service: the
Model's `status.endpoint` (the URL itself) is the way to reach it.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from modelyard.api.v1alpha1 import Model
from modelyard.builders import labels

Manifest = dict[str, Any]
#: The template label's value on an external Model's Service (it has no template).
NO_TEMPLATE = "external"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def service(model: Model) -> Manifest | None:
    """The ExternalName Service, or None when the URL names an address, not a host."""
    external = model.spec.external
    assert external is not None
    parts = urlsplit(external.url)
    host = parts.hostname
    if not host or _is_address(host):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    name = model.metadata.name
    metadata: Manifest = {"name": name}
    if model.metadata.namespace:
        metadata["namespace"] = model.metadata.namespace
    metadata["labels"] = labels.child_labels(name, NO_TEMPLATE)
    if model.metadata.uid:
        metadata["ownerReferences"] = [labels.owner_reference(name, model.metadata.uid)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ExternalName",
            "externalName": host,
            "ports": [{"name": labels.PORT_NAME, "port": port, "protocol": "TCP"}],
        },
    }
