"""Every condition reason the operator writes, in one place.

Reasons are API: users grep for them, alert on them and Argo CD health scripts read them, so
they are constants here and nowhere else spelt out.
"""

from typing import Final

from modelyard.registry.http import Failure
from modelyard.registry.signatures import SignatureVerdict
from modelyard.registry.verify import MlflowVerdict, Verdict

# Condition types
READY: Final = "Ready"
TEMPLATE_RESOLVED: Final = "TemplateResolved"
VERSION_RESOLVED: Final = "VersionResolved"
PARAMETERS_VALID: Final = "ParametersValid"
AVAILABLE: Final = "Available"
AUTOSCALING: Final = "Autoscaling"
VALID: Final = "Valid"
#: On a verified ModelVersion while its registry cannot be asked: present only then.
REGISTRY_REACHABLE: Final = "RegistryReachable"
#: kstatus's conditions (what Flux and cli-utils read), present only while True: work under
#: way, and a Model that only a change of its spec or of what it uses can help.
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# Model: inputs
RESOLVED: Final = "Resolved"
NOT_REQUIRED: Final = "NotRequired"
TEMPLATE_NOT_FOUND: Final = "TemplateNotFound"
TEMPLATE_NOT_READY: Final = "TemplateNotReady"
#: Under an Enforce policy, the template's image waits for its first (or next) signature check:
#: a wait that ends by itself, unlike TemplateNotReady.
SIGNATURE_PENDING: Final = "SignaturePending"
REGISTRY_NOT_FOUND: Final = "RegistryNotFound"
VERSION_REQUIRED: Final = "VersionRequired"
VERSION_NOT_FOUND: Final = MlflowVerdict.NOT_FOUND
VERSION_NOT_READY: Final = "VersionNotReady"
PARAMETERS_INVALID: Final = "ParametersInvalid"
UNKNOWN_GPU_TYPE: Final = "UnknownGpuType"
AUTOSCALER_UNAVAILABLE: Final = "AutoscalerUnavailable"
FIXED_SIZE: Final = "FixedSize"
INVALID_SCALING: Final = "InvalidScaling"
HPA: Final = "HorizontalPodAutoscaler"
KEDA: Final = "KedaScaledObject"

# Model: workload
DEPLOYING: Final = "Deploying"
PROGRESSING: Final = "Progressing"
AVAILABLE_REASON: Final = "Available"
SCALED_TO_ZERO: Final = "ScaledToZero"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
UNSCHEDULABLE: Final = "Unschedulable"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
STARTUP_TIMEOUT: Final = "StartupTimeout"
API_ERROR: Final = "ApiError"
PODS_REJECTED: Final = "PodsRejected"

# A canary rollout (condition Rollout; status.rollout.phase uses the same words).
ROLLOUT: Final = "Rollout"
#: The new revision's weights are being pulled onto the serving workers' nodes first.
WARMING: Final = "Warming"
CANARY: Final = "Canary"
AWAITING_CAPACITY: Final = "AwaitingCapacity"
ANALYSING: Final = "Analysing"
PROMOTING: Final = "Promoting"
PROMOTED: Final = "Promoted"
ROLLED_BACK: Final = "RolledBack"
#: A rollout whose candidate was withdrawn (the spec went back to what serves) before the end.
WITHDRAWN: Final = "Withdrawn"

# A child the API server refused to store (condition ChildrenApplied).
CHILDREN_APPLIED: Final = "ChildrenApplied"
APPLIED: Final = "Applied"
QUOTA_EXCEEDED: Final = "QuotaExceeded"
POLICY_DENIED: Final = "PolicyDenied"
CHILD_INVALID: Final = "ChildInvalid"
CHILD_REJECTED: Final = "ChildRejected"

# The autoscaler's own view (condition Autoscaling), mirrored.
METRICS_UNAVAILABLE: Final = "MetricsUnavailable"
AUTOSCALER_UNABLE: Final = "AutoscalerUnableToScale"
SCALER_NOT_READY: Final = "ScaledObjectNotReady"

# A Model's answers (condition Conformant) and an external model's endpoint (Available).
CONFORMANT: Final = "Conformant"
SCHEMA_MISMATCH: Final = "SchemaMismatch"
#: The answer is in the type's schema and says the model could not do it (status: failed).
INFERENCE_FAILED: Final = "InferenceFailed"
#: The model's server refuses the probe's sample (MLflow: its signature does not take it): the
#: template's sample is wrong for this model, not the server.
PROBE_REFUSED: Final = "ProbeRefused"
#: A DEEPaaS server that does not list the model the probe names (or any model).
MODEL_NOT_LISTED: Final = "ModelNotListed"
#: An Open Inference Protocol server that says it, or the model, is not ready.
MODEL_NOT_READY: Final = "ModelNotReady"
#: A classifier's classes (GET classesPath) lack a registered class, or are no list of names.
CLASSES_MISMATCH: Final = "ClassesMismatch"
ENDPOINT_ERROR: Final = "EndpointError"
ENDPOINT_UNREACHABLE: Final = "EndpointUnreachable"
#: The egress policy refuses the URL, or the server redirected to another origin.
ENDPOINT_NOT_PERMITTED: Final = "EndpointNotPermitted"
PROBING: Final = "Probing"
AWAITING_WORKERS: Final = "AwaitingWorkers"
AWAITING_ENDPOINT: Final = "AwaitingEndpoint"
ANSWERING: Final = "Answering"
EXTERNAL: Final = "External"

# ModelTemplate
INVALID_SPEC: Final = "InvalidSpec"
IN_USE: Final = "InUse"

# Registry
REACHABLE: Final = "Reachable"
UNAUTHORIZED: Final = Failure.UNAUTHORIZED
UNREACHABLE: Final = Failure.UNREACHABLE
TLS_ERROR: Final = Failure.TLS_ERROR
SECRET_NOT_FOUND: Final = "SecretNotFound"
SECRET_INVALID: Final = "SecretInvalid"
SECRET_NOT_PERMITTED: Final = "SecretNotPermitted"

# ModelVersion (and template images given by tag)
VERIFIED: Final = "Verified"
TAG_CURRENT: Final = "TagCurrent"
DIGEST_VERIFIED: Final = Verdict.VERIFIED
DIGEST_MISMATCH: Final = Verdict.MISMATCH
DIGEST_NOT_FOUND: Final = Verdict.NOT_FOUND
REGISTRY_NOT_READY: Final = "RegistryNotReady"
DUPLICATE_VERSION: Final = "DuplicateVersion"
TAG_MOVED: Final = "TagMoved"
TAG_UNCHANGED: Final = "TagUnchanged"
NO_TAG: Final = "NoTag"
IMAGE_UNRESOLVED: Final = "ImageUnresolved"
TAG_NOT_FOUND: Final = "TagNotFound"
#: The Mountable condition of a version of weights, and its reasons.
MOUNTABLE: Final = "Mountable"
IMAGE_LAYERS: Final = "ImageLayers"
#: Weights a node would not mount as their files (an empty config, blobs per file, an index).
WEIGHTS_NOT_MOUNTABLE: Final = "WeightsNotMountable"
#: Weights a worker must verify, and no verifier image configured to verify them with.
WEIGHTS_VERIFIER_MISSING: Final = "WeightsVerifierMissing"
#: A worker's init step found the mounted weights unlike their signed manifest.
WEIGHTS_NOT_VERIFIED: Final = "WeightsNotVerified"
#: A worker's init step could not run its check (killed, no memory, its image broken).
VERIFIER_FAILED: Final = "VerifierFailed"
#: An Enforce policy with no key model-signing can verify weights with (ECDSA only).
WEIGHTS_KEYS_UNSUPPORTED: Final = "WeightsKeysUnsupported"
#: A version with weights, and a template without weights.mountPath to put them at.
WEIGHTS_PATH_REQUIRED: Final = "WeightsPathRequired"
#: A version from MLflow, run by a template that loads pinned files (weights.mountPath), whose
#: files the operator has not pinned by content (yet: the tracking server must serve them).
WEIGHTS_NOT_PINNED: Final = "WeightsNotPinned"

# Signatures: on a Registry with a signature policy (Signatures), and on its ModelVersions and
# the templates whose image it holds (Signed).
SIGNATURES: Final = "Signatures"
SIGNED: Final = "Signed"
KEYS_LOADED: Final = "KeysLoaded"
SIGNATURE_VERIFIED: Final = SignatureVerdict.VERIFIED
SIGNATURE_MISSING: Final = SignatureVerdict.MISSING
SIGNATURE_INVALID: Final = SignatureVerdict.INVALID
KEY_NOT_FOUND: Final = SignatureVerdict.KEY_NOT_FOUND

# ModelVersions from an MLflow registry
ALIAS_CURRENT: Final = "AliasCurrent"
VERSION_VERIFIED: Final = MlflowVerdict.VERIFIED
VERSION_PENDING: Final = MlflowVerdict.PENDING
VERSION_FAILED: Final = MlflowVerdict.FAILED
ALIAS_NOT_FOUND: Final = MlflowVerdict.ALIAS_NOT_FOUND
ALIAS_MOVED: Final = "AliasMoved"
ALIAS_UNCHANGED: Final = "AliasUnchanged"
NO_ALIAS: Final = "NoAlias"
REGISTRY_MISMATCH: Final = "RegistryMismatch"
IMAGE_REQUIRED: Final = "ImageRequired"

#: Ready=False reasons that wait for something else to appear or recover: state PENDING.
WAITING: Final = frozenset(
    {
        TEMPLATE_NOT_FOUND,
        TEMPLATE_NOT_READY,
        SIGNATURE_PENDING,
        REGISTRY_NOT_FOUND,
        VERSION_NOT_FOUND,
        VERSION_NOT_READY,
        IMAGE_UNRESOLVED,
        WEIGHTS_NOT_PINNED,
    }
)

#: Ready=False reasons of templates, registries and versions that only a change of the object
#: (or of a Secret it names) can lift: kstatus Stalled, so Flux fails instead of waiting.
#: Outages (Unreachable, RegistryNotReady, VersionPending) are Reconciling instead.
PERMANENT: Final = frozenset(
    {
        INVALID_SPEC,
        SECRET_NOT_FOUND,
        SECRET_INVALID,
        SECRET_NOT_PERMITTED,
        UNAUTHORIZED,
        TLS_ERROR,
        DIGEST_MISMATCH,
        DIGEST_NOT_FOUND,
        WEIGHTS_NOT_MOUNTABLE,
        WEIGHTS_PATH_REQUIRED,
        WEIGHTS_VERIFIER_MISSING,
        WEIGHTS_KEYS_UNSUPPORTED,
        DUPLICATE_VERSION,
        TAG_NOT_FOUND,
        REGISTRY_MISMATCH,
        IMAGE_REQUIRED,
        VERSION_FAILED,
        ALIAS_NOT_FOUND,
        VERSION_NOT_FOUND,
        SIGNATURE_MISSING,
        SIGNATURE_INVALID,
        KEY_NOT_FOUND,
    }
)
#: Model Ready=False reasons that wait (state PENDING) but on something only a change can fix:
#: a template the operator found invalid, or whose image's signature is definitely missing or
#: wrong (not one whose check is still to come: that is SIGNATURE_PENDING).
STALLED_WAITING: Final = frozenset({TEMPLATE_NOT_READY})
