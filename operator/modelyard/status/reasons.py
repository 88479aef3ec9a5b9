"""Every condition reason the operator writes, in one place.

Reasons are API: users grep for them, alert on them and Argo CD health scripts read them, so
they are constants here and nowhere else spelt out.
"""

from typing import Final

# Condition types
READY: Final = "Ready"
TEMPLATE_RESOLVED: Final = "TemplateResolved"
VERSION_RESOLVED: Final = "VersionResolved"
PARAMETERS_VALID: Final = "ParametersValid"
AVAILABLE: Final = "Available"
AUTOSCALING: Final = "Autoscaling"
VALID: Final = "Valid"

# Model: inputs
RESOLVED: Final = "Resolved"
NOT_REQUIRED: Final = "NotRequired"
TEMPLATE_NOT_FOUND: Final = "TemplateNotFound"
TEMPLATE_NOT_READY: Final = "TemplateNotReady"
REGISTRY_NOT_FOUND: Final = "RegistryNotFound"
VERSION_REQUIRED: Final = "VersionRequired"
VERSION_NOT_FOUND: Final = "VersionNotFound"
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
AVAILABLE_REASON: Final = "Available"
SCALED_TO_ZERO: Final = "ScaledToZero"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
UNSCHEDULABLE: Final = "Unschedulable"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
STARTUP_TIMEOUT: Final = "StartupTimeout"
API_ERROR: Final = "ApiError"

# ModelTemplate
INVALID_SPEC: Final = "InvalidSpec"
IN_USE: Final = "InUse"

#: Ready=False reasons that wait for something else to appear or recover: state PENDING.
WAITING: Final = frozenset(
    {
        TEMPLATE_NOT_FOUND,
        TEMPLATE_NOT_READY,
        REGISTRY_NOT_FOUND,
        VERSION_NOT_FOUND,
        VERSION_NOT_READY,
    }
)
