"""Shapes of the strings the API accepts.

Each shape is one regular expression used twice: by pydantic when the operator or the CLI reads a
manifest, and inside the CEL rule the apiserver evaluates on `kubectl apply`. Keeping a single
constant means a manifest that `modelyard render` accepts is never refused by the cluster, and the
other way round. The expressions stay within RE2 (no look-arounds) because the apiserver's CEL
`matches()` is RE2 while Python's is `re`.
"""

from __future__ import annotations

import re
from typing import Final

#: `sha256:` plus 64 lowercase hex digits — the only digest algorithm registries hand out today.
DIGEST: Final = r"^sha256:[a-f0-9]{64}$"

#: semver.org's grammar: MAJOR.MINOR.PATCH, an optional pre-release suffix such as
#: `-initially-released-version-of-our-awesome-model`, and optional build metadata.
SEMVER: Final = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?$"
)

#: A name other objects are referred to by (Secret, Registry, ModelTemplate): a DNS subdomain.
OBJECT_NAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_NAME_MAX: Final = 253

#: A Model's own name becomes a Service name, and Services need a DNS-1035 label.
SERVICE_NAME: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SERVICE_NAME_MAX: Final = 63

#: A logical model name (ModelVersion.spec.model); it is used as a label value, hence 63.
MODEL_NAME: Final = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
MODEL_NAME_MAX: Final = 63

#: A version selector: an exact semantic version or a range of comparators (`>=1.0.0 <2.0.0`,
#: `^1.2`, `~1.2.3`, `1.x`, alternatives joined by `||`).
VERSION_RANGE: Final = r"^[0-9A-Za-z.+<>=~^*, |-]+$"

#: Parameter and env names end up as container environment variables.
ENV_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
ENV_NAME_MAX: Final = 128

#: Repository path grammar of the OCI distribution spec.
REPOSITORY: Final = r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
REPOSITORY_MAX: Final = 255

#: An MLflow registered model name: MLflow allows almost anything but '/' and ':' (it goes into
#: `models:/<name>/<version>` URIs); control characters and spaces at the ends are refused too.
MLFLOW_MODEL_NAME: Final = r"^[^/:\s]([^/:]*[^/:\s])?$"
MLFLOW_MODEL_NAME_MAX: Final = 256

#: An MLflow model version number (MLflow numbers versions 1, 2, 3…).
MLFLOW_VERSION: Final = r"^[1-9][0-9]*$"

#: An MLflow alias: letters, digits, '_' and '-' (MLflow refuses `latest` and `v<number>`).
MLFLOW_ALIAS: Final = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$"

#: Tag grammar of the OCI distribution spec.
TAG: Final = r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"

#: A registry endpoint; a scheme is required so plain HTTP is always a deliberate choice.
URL: Final = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"
URL_MAX: Final = 2048

#: Non-negative Kubernetes quantities as written for cpu, memory and ephemeral-storage.
QUANTITY: Final = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"

#: An HTTP path for probes.
HTTP_PATH: Final = r"^/[^\s]*$"
#: Where a container reads files: absolute, no "." or ".." segment, no ":" (a mount path).
MOUNT_PATH: Final = r"^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$"
#: An HTTP header name: letters, digits, "-" and "_" (what real header names use).
HEADER_NAME: Final = r"^[A-Za-z0-9_-]+$"
#: A key of a Secret's data.
SECRET_KEY: Final = r"^[-._a-zA-Z0-9]+$"

#: Condition reasons are CamelCase words, as in metav1.Condition.
REASON: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


def matches(pattern: str, value: str) -> bool:
    """Full-string match with the same anchoring the CEL rule uses."""
    return re.match(pattern, value) is not None
