"""The four kinds of `modelyard.dev/v1alpha1`: Registry, ModelTemplate, ModelVersion and Model.

These classes are the single source of the API: the CRDs in `crds/` are generated from them
(`make crds`), and the operator and the CLI parse manifests with them. Cross-field rules are
enforced twice on purpose — as CEL (`x-kubernetes-validations`, by the apiserver at apply time)
and as pydantic validators (when the operator or `modelyard render` reads a manifest): CEL
cannot run here, and pydantic cannot run in the apiserver. Rules on a whole object's name are
declared once (`NameRule`) with both forms side by side; for the rest, `tests/test_schema.py`
runs the same catalogue of bad manifests through both and fails when they disagree.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator

from modelyard.api import contracts, formats, protocols
from modelyard.api.types import (
    Condition,
    Digest,
    EnvName,
    HeaderName,
    HttpPath,
    KindInfo,
    MlflowAlias,
    MlflowModelName,
    MlflowVersion,
    ModelName,
    MountPath,
    ObjectName,
    Quantity,
    Repository,
    Resource,
    ScalarValue,
    SecretKey,
    SemVer,
    SpecModel,
    StrEnum,
    Tag,
    Url,
    VersionRange,
    cel_rule,
    cel_rules,
    conditions_field,
    observed_generation_field,
    ready_columns,
)

GROUP = "modelyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "modelyard"

MAX_PARAMETERS = 64
MAX_ENV = 128
MAX_WORKERS = 1000
MAX_GPUS = 16

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class RegistryType(StrEnum):
    """Which protocol the registry speaks."""

    OCI = "oci"
    MLFLOW = "mlflow"


class RegistryTLS(SpecModel):
    """TLS settings for registries behind a private CA."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!has(self.caSecret) || !has(self.insecureSkipVerify) || !self.insecureSkipVerify",
                "caSecret and insecureSkipVerify contradict each other: trust a CA or skip "
                "verification, not both",
            )
        )
    )

    ca_secret: ObjectName | None = Field(
        None,
        description="Name of a Secret in the same namespace whose `ca.crt` key holds the PEM "
        "certificate authority that signed the registry's certificate.",
    )
    insecure_skip_verify: bool = Field(
        False,
        description="Skip TLS certificate verification. Only for test registries: it lets "
        "anyone on the path substitute images. Default false.",
    )

    @model_validator(mode="after")
    def _not_both(self) -> RegistryTLS:
        if self.ca_secret and self.insecure_skip_verify:
            raise ValueError(
                "caSecret and insecureSkipVerify contradict each other: trust a CA or skip "
                "verification, not both"
            )
        return self


class SignatureMode(StrEnum):
    """What an image without a valid signature may do."""

    ENFORCE = "Enforce"
    WARN = "Warn"


class PublicKeyRef(SpecModel):
    """A cosign public key, PEM, in a Secret of the Registry's namespace."""

    secret_name: ObjectName = Field(
        ...,
        description="Name of the Secret holding the key. Like every Secret modelyard reads, it "
        "must be labelled modelyard.dev/use=true by its owner.",
    )
    key: SecretKey = Field(
        "cosign.pub",
        description="Key of the Secret's data holding the PEM public key, as `cosign "
        "generate-key-pair` writes it (ECDSA P-256) or an Ed25519 or RSA public key. "
        "Default cosign.pub.",
    )


MAX_PUBLIC_KEYS = 16


class SignaturePolicy(SpecModel):
    """Who must have signed an image from this registry before it runs."""

    mode: SignatureMode = Field(
        SignatureMode.ENFORCE,
        description="`Enforce` (the default): an image without a signature by one of the "
        "public keys never runs; its ModelVersion is not Ready and a template using it is not "
        "Ready. `Warn`: it runs, and its Signed condition is False with a Warning Event.",
    )
    public_keys: list[PublicKeyRef] = Field(
        ...,
        min_length=1,
        max_length=MAX_PUBLIC_KEYS,
        description="The public keys whose cosign signatures are trusted; a signature by any "
        "one of them is enough. Signatures are read as cosign writes them: the "
        "`sha256-<hex>.sig` tag and OCI 1.1 referrers holding a Sigstore bundle.",
    )


_SIGNATURES_NEED_OCI = (
    "signatures apply to OCI images: an mlflow registry holds model versions, which cosign "
    "does not sign"
)


class RegistrySpec(SpecModel):
    """Where images or model artifacts come from, and how to log in."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!has(self.signatures) || !has(self.type) || self.type == 'oci'",
                _SIGNATURES_NEED_OCI,
            )
        )
    )

    type: RegistryType = Field(
        RegistryType.OCI,
        description="Protocol of the registry: `oci` (quay.io, GHCR, Docker Hub, Harbor, ECR, "
        "a self-hosted registry; the default) or `mlflow` (an MLflow model registry).",
    )
    url: Url = Field(
        ...,
        description="Base URL of the registry, with its scheme, for example https://quay.io. "
        "Image references are formed from its host and port.",
    )
    credentials_secret: ObjectName | None = Field(
        None,
        description="Name of a Secret in the same namespace holding the credentials. For `oci`: "
        "type kubernetes.io/dockerconfigjson, kubernetes.io/basic-auth, or an Opaque Secret with "
        "a `token` key. For `mlflow`: `username` and `password` keys (basic auth, as MLflow's "
        "basic-auth app takes them) or a `token` key (a bearer token, such as a Databricks "
        "personal access token). Omit for anonymous access.",
    )
    tls: RegistryTLS | None = Field(
        None, description="TLS settings, for registries with a private certificate authority."
    )
    check_interval_seconds: int = Field(
        300,
        ge=10,
        le=86400,
        description="How often, in seconds, the operator checks that the registry answers "
        "and the credentials work. Default 300. Signatures are checked again as often.",
    )
    signatures: SignaturePolicy | None = Field(
        None,
        description="Require cosign signatures on every image from this registry (ModelVersion "
        "digests and template images). Only for `oci` registries. Omit to run unsigned images.",
    )

    @model_validator(mode="after")
    def _signatures_need_oci(self) -> RegistrySpec:
        if self.signatures is not None and self.type is not RegistryType.OCI:
            raise ValueError(_SIGNATURES_NEED_OCI)
        return self


class RegistryStatus(SpecModel):
    """What the operator last saw of the registry."""

    model_config = ConfigDict(extra="ignore")

    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = observed_generation_field()
    last_check_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="When the registry was last checked (RFC 3339).",
    )
    pull_secret: str | None = Field(
        None,
        description="Name of the Secret that pods pulling from this registry use as "
        "imagePullSecret.",
    )
    public_keys: list[str] = Field(
        default_factory=list,
        max_length=MAX_PUBLIC_KEYS,
        description="The signature policy's ECDSA public keys (PEM) as read from their Secrets: "
        "workers whose weights come from this registry verify the mounted files with them "
        "(model-signing verifies ECDSA P-256, P-384 and P-521 keys).",
    )


class Registry(Resource):
    """A connection to an image registry (OCI) or a model registry (MLflow).

    ModelTemplates and ModelVersions name a Registry; the operator checks that it answers with
    the given credentials and hands its pull secret to the pods that use it.
    """

    info = KindInfo(
        kind="Registry",
        plural="registries",
        short_names=["reg"],
        printer_columns=[
            {
                "name": "Type",
                "type": "string",
                "jsonPath": ".spec.type",
                "description": "Registry protocol.",
            },
            {"name": "URL", "type": "string", "jsonPath": ".spec.url", "description": "Base URL."},
            *ready_columns(),
        ],
    )

    spec: RegistrySpec = Field(..., description="Desired connection to the registry.")
    status: RegistryStatus | None = Field(
        None, description="Observed state of the registry, written by the operator."
    )


# --------------------------------------------------------------------------------------------
# ModelTemplate
# --------------------------------------------------------------------------------------------


class ModelType(StrEnum):
    """What kind of requests the model answers; decides the request and response schema."""

    EMBEDDING = "EMBEDDING"
    RERANKING = "RERANKING"
    COMPLETION = "COMPLETION"
    CHAT_COMPLETION = "CHAT_COMPLETION"
    AGENT = "AGENT"
    IMAGE_CLASSIFICATION = "IMAGE_CLASSIFICATION"
    CUSTOM = "CUSTOM"


class EndpointType(StrEnum):
    """How callers talk to the model."""

    SYNC = "SYNC"
    ASYNC = "ASYNC"
    STREAMING = "STREAMING"


class ParameterType(StrEnum):
    """Type of a template parameter; `secret` values name a Secret key rather than carry data."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    SECRET = "secret"


class TemplateImage(SpecModel):
    """The container image every Model of this template runs."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "has(self.tag) != has(self.digest)",
                "image needs exactly one of tag or digest",
            )
        )
    )

    registry: ObjectName = Field(
        ..., description="Name of the Registry, in the same namespace, that holds the image."
    )
    repository: Repository = Field(
        ...,
        description="Repository path inside the registry, for example "
        "egp-test/sentence-transformer-reranker.",
    )
    tag: Tag | None = Field(
        None,
        description="Tag to run. The operator resolves it to a digest and pins that digest; "
        "a tag moved later is reported, not silently followed. Exactly one of tag or digest.",
    )
    digest: Digest | None = Field(
        None,
        description="Digest to run, `sha256:` plus 64 hex digits. Exactly one of tag or digest.",
    )

    @model_validator(mode="after")
    def _tag_or_digest(self) -> TemplateImage:
        if (self.tag is None) == (self.digest is None):
            raise ValueError("image needs exactly one of tag or digest")
        return self


class Readiness(SpecModel):
    """How the operator and Kubernetes tell that a worker can take requests."""

    path: HttpPath = Field(
        "/health",
        description="HTTP path answering 200 when the model is loaded. Default /health.",
    )
    initial_delay_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="Seconds to wait after a worker starts before the first readiness check; "
        "for models that take long to load. Default 0.",
    )
    period_seconds: int = Field(
        10, ge=1, le=300, description="Seconds between readiness checks. Default 10."
    )


class Resources(SpecModel):
    """Compute each worker reserves; requests and limits are set to the same values."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!has(self.gpuType) || (has(self.gpus) && self.gpus > 0)",
                "gpuType needs gpus of at least 1",
                field_path=".gpuType",
            )
        )
    )

    cpus: Quantity | None = Field(None, description="CPU cores per worker, for example 1 or 500m.")
    memory: Quantity | None = Field(None, description="Memory per worker, for example 8Gi.")
    storage: Quantity | None = Field(
        None, description="Ephemeral (scratch) storage per worker, for example 16Gi."
    )
    gpus: int = Field(
        0,
        ge=0,
        le=MAX_GPUS,
        description=f"GPUs per worker, 0 to {MAX_GPUS}. Default 0.",
    )
    gpu_type: ObjectName | None = Field(
        None,
        description="GPU type, a name from the operator's GPU-type map (for example "
        "nvidia-ampere-a10, nvidia-hopper-h100); decides the resource name, node selector "
        "and tolerations. Omit to accept any GPU.",
    )

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> Resources:
        if self.gpu_type is not None and self.gpus < 1:
            raise ValueError("gpuType needs gpus of at least 1")
        return self


_MIN_LE_MAX = cel_rule(
    "!has(self.minWorkers) || !has(self.maxWorkers) || self.minWorkers <= self.maxWorkers",
    "minWorkers must not exceed maxWorkers",
    field_path=".minWorkers",
)


class Scaling(SpecModel):
    """How many workers run, and how busy each may get before another starts."""

    model_config = ConfigDict(json_schema_extra=cel_rules(_MIN_LE_MAX))

    min_workers: int = Field(
        ...,
        ge=0,
        le=MAX_WORKERS,
        description="Fewest workers. 0 lets the model scale to zero when idle.",
    )
    max_workers: int = Field(
        ..., ge=1, le=MAX_WORKERS, description="Most workers. Equal to minWorkers: fixed size."
    )
    per_worker: int = Field(
        1,
        ge=1,
        le=100000,
        description="Target concurrent requests per worker; the autoscaler adds workers above "
        "it. Default 1.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"minWorkers ({self.min_workers}) must not exceed maxWorkers ({self.max_workers})"
            )
        return self


class Parameter(SpecModel):
    """One value a Model must or may supply; it reaches the workers as an environment variable.

    `default` is untyped in the CRD (a string, number or boolean), and an untyped field is
    invisible to the apiserver's CEL: the rules on it (a scalar, none for secrets) are enforced
    by the validators below, which make the template's status say `InvalidSpec`.
    """

    name: EnvName = Field(
        ..., description="Parameter name; also the environment variable the worker sees."
    )
    type: ParameterType = Field(
        ParameterType.STR,
        description="Value type: str, int, float, bool, or secret (the value is "
        "`secret-name/key` of a Secret in the Model's namespace). Default str.",
    )
    description: str = Field("", max_length=1024, description="What the parameter is for.")
    required: bool = Field(
        False, description="Whether every Model must supply a value. Default false."
    )
    default: ScalarValue | None = Field(None, description="Value used when a Model supplies none.")

    @model_validator(mode="after")
    def _no_secret_default(self) -> Parameter:
        if self.type is ParameterType.SECRET and self.default is not None:
            raise ValueError("a secret parameter cannot have a default: its value names a Secret")
        return self


#: A probe's sample request: any JSON object to pydantic; to the API server, the union of the
#: request fields of every model type (see `contracts.structural_request_schema`).
ProbeRequest = Annotated[dict[str, Any], WithJsonSchema(contracts.structural_request_schema())]


class ProbeProtocol(StrEnum):
    """Whose protocol the probe speaks, and so what its answer is judged by."""

    MODELYARD = "Modelyard"
    MLFLOW = "MLflow"
    DEEPAAS = "DEEPaaS"
    OPEN_INFERENCE = "OpenInference"


_PROTOCOL = (
    "How the server is asked and its answer judged. Modelyard (default): POST the request to "
    "path and judge the answer by the modelType's response schema. MLflow: MLflow's scoring "
    "server (mlflow models serve): POST the request (dataframe_split, dataframe_records, "
    "instances or inputs) to /invocations; the answer's predictions must have one row per "
    "input row. A dataframe_split or dataframe_records lacking a column the signature of the "
    "Model's MLflow version requires (its ModelVersion's status.mlflow.signature) is not sent "
    "(ProbeRefused). DEEPaaS: the model (model, else the first GET /v2/models/ lists) must be "
    "listed; its metadata is recorded in status.server; the request's fields are its predict "
    "arguments, POSTed to /v2/models/{model}/predict/, and the answer must match the response "
    "schema the server publishes (/swagger.json). OpenInference (KServe v2: MLServer, Triton): "
    "/v2/health/ready and /v2/models/{model}/ready must answer; the model's metadata (inputs, "
    "outputs) is recorded in status.server; the request ({inputs: [...]}) is POSTed to "
    "/v2/models/{model}/infer, and every declared output must come back with its datatype and "
    "a shape whose first dimension is the input batch's."
)


class Probe(SpecModel):
    """A sample request the operator sends once workers are ready, and whose answer must
    conform — to the model type's response schema, or to the serving runtime's own protocol —
    before the Model is READY."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            # What a protocol's request holds is the operator's to judge (`request_problems`):
            # CEL cannot reach fields whose items are open.
            cel_rule(
                "!has(self.protocol) || self.protocol != 'OpenInference' || has(self.model)",
                "an OpenInference probe names its model",
            ),
            cel_rule(
                "!has(self.protocol) || !(self.protocol in ['DEEPaaS', 'OpenInference']) || "
                "!has(self.path)",
                "path is the protocol's own for DEEPaaS and OpenInference: leave it out "
                "(remove it from the template: an apply keeps a path set before)",
                field_path=".path",
            ),
        )
    )

    protocol: ProbeProtocol = Field(ProbeProtocol.MODELYARD, description=_PROTOCOL)
    model: ModelName | None = Field(
        None,
        description="The model's name in its server: the Open Inference Protocol's model name "
        "(required there), DEEPaaS's model id (default: the first it lists).",
    )
    path: HttpPath | None = Field(
        None,
        description="HTTP path the request is POSTed to, as JSON. Default /predict "
        "(Modelyard), /invocations (MLflow); DEEPaaS and OpenInference use their own paths.",
    )
    request: ProbeRequest = Field(
        ...,
        description="The sample request: in the model type's request schema (`modelyard "
        "schemas TYPE` shows it), e.g. {query: ..., chunks: [...]} for RERANKING, or in the "
        "protocol's own (see protocol). It is validated when the template is applied.",
    )
    timeout_seconds: int = Field(
        10,
        ge=1,
        le=300,
        description="Seconds to wait for the answer before the endpoint counts as "
        "unreachable. Default 10.",
    )

    @property
    def effective_path(self) -> str:
        """Where the request goes: the protocol's own path, or the one given."""
        if self.protocol is ProbeProtocol.DEEPAAS:
            return f"/v2/models/{self.model or '{model}'}/predict/"
        if self.protocol is ProbeProtocol.OPEN_INFERENCE:
            return f"/v2/models/{self.model}/infer"
        if self.path:
            return str(self.path)
        return "/invocations" if self.protocol is ProbeProtocol.MLFLOW else "/predict"

    @model_validator(mode="after")
    def _protocol_request(self) -> Probe:
        protocols.request_problems(self.protocol.value, self.model, self.path, self.request)
        return self


class RolloutStrategy(StrEnum):
    """How a new revision replaces the one that serves."""

    ROLLING = "Rolling"
    CANARY = "Canary"


_ROLLOUT_STRATEGY = (
    "How a new revision (a newer ModelVersion in range, a changed template or parameters) "
    "replaces the one that serves: Rolling replaces the workers one by one as soon as the new "
    "ones are ready; Canary first runs canaryWorkers of the new revision beside the current "
    "ones, behind the same Service, and rolls only once they answer the probe correctly for "
    "analysisSeconds (rolled back by itself otherwise). Default Rolling."
)
_CANARY_WORKERS = "Workers of the new revision run as the canary. Default 1."
_ANALYSIS_SECONDS = (
    "Seconds the canary must keep answering the probe correctly (with a template probe; "
    "else keep running without a failure) before the rollout goes on. Default 60."
)
_CAPACITY_DIP = (
    "When the cluster has no room for the canary (the scheduler says Unschedulable), take one "
    "current worker away to make room instead of waiting. Never below minWorkers current "
    "workers, except with minWorkers 1: then the canary serves alone until it is promoted or "
    "rolled back. Default false."
)


class Rollout(SpecModel):
    """A template's rollout: how its Models take a new revision."""

    strategy: RolloutStrategy = Field(RolloutStrategy.ROLLING, description=_ROLLOUT_STRATEGY)
    canary_workers: int = Field(1, ge=1, le=MAX_WORKERS, description=_CANARY_WORKERS)
    analysis_seconds: int = Field(60, ge=0, le=86400, description=_ANALYSIS_SECONDS)
    allow_capacity_dip: bool = Field(False, description=_CAPACITY_DIP)


class RolloutOverride(SpecModel):
    """A Model's changes to its template's rollout; unset fields keep the template's."""

    strategy: RolloutStrategy | None = Field(None, description=_ROLLOUT_STRATEGY)
    canary_workers: int | None = Field(None, ge=1, le=MAX_WORKERS, description=_CANARY_WORKERS)
    analysis_seconds: int | None = Field(None, ge=0, le=86400, description=_ANALYSIS_SECONDS)
    allow_capacity_dip: bool | None = Field(None, description=_CAPACITY_DIP)


def probe_rules(type_field: str) -> list[dict[str, str]]:
    """CEL: a probe's request has every field its model type's request schema requires."""
    rules = []
    for model_type, _contract in contracts.CONTRACTS.items():
        required = contracts.required_request_fields(model_type)
        needs = " && ".join(f"has(self.probe.request.{name})" for name in required)
        rules.append(
            cel_rule(
                f"!has(self.probe) || self.{type_field} != '{model_type}' || "
                f"(has(self.probe.protocol) && self.probe.protocol != 'Modelyard') || ({needs})",
                f"probe.request must be a request of type {model_type}: it needs "
                + " and ".join(required),
                field_path=".probe.request",
            )
        )
    return rules


def probe_problems(model_type: str, probe: Probe | None) -> None:
    """Raise when the probe's request does not conform to its type's request schema."""
    if probe is None or probe.protocol is not ProbeProtocol.MODELYARD:
        return
    found = contracts.check_request(model_type, probe.request)
    if found:
        raise ValueError(
            f"probe.request is not a valid {getattr(model_type, 'value', model_type)} request: "
            + "; ".join(found)
        )


_CLASSES_PATH = (
    "Path the server answers GET on with its classes, a JSON list of strings. Default "
    "/api/classes for IMAGE_CLASSIFICATION (other types are not asked). Every registered class "
    "must be offered (ClassesMismatch names the missing ones); without registered classes, the "
    "server's are recorded in status.classes and its answers' labels are judged against them."
)
_CLASSES = (
    "The classes the model predicts, as registered (e.g. cat, dog): an IMAGE_CLASSIFICATION "
    "answer with another label is SchemaMismatch."
)


#: Where weights may not be mounted: over the system's own files, or the verifier's (which
#: runs from the operator's image, with its /tmp on a volume of its own).
RESERVED_MOUNT_PATHS = (
    "/bin", "/dev", "/etc", "/lib", "/lib64", "/opt/modelyard", "/proc", "/run", "/sbin",
    "/sys", "/tmp", "/usr", "/var/run",
)  # fmt: skip
_RESERVED_MOUNT = (
    "weights.mountPath may not be one of, under, or above "
    + ", ".join(RESERVED_MOUNT_PATHS)
    + ": the weights would hide the runtime's or the verifier's own files"
)


class TemplateWeights(SpecModel):
    """Where the runtime finds a version's weights."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "!"
                + json.dumps(list(RESERVED_MOUNT_PATHS))
                + ".exists(p, self.mountPath == p || self.mountPath.startsWith(p + '/') "
                "|| p.startsWith(self.mountPath + '/'))",
                _RESERVED_MOUNT,
            )
        )
    )

    mount_path: MountPath = Field(
        ...,
        description="Directory the version's weights are mounted at, read-only (an image "
        "volume: the node pulls them by digest once and keeps them for every worker).",
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> TemplateWeights:
        path = self.mount_path
        if any(
            path == p or path.startswith(p + "/") or p.startswith(path + "/")
            for p in RESERVED_MOUNT_PATHS
        ):
            raise ValueError(_RESERVED_MOUNT)
        return self


class ModelTemplateSpec(SpecModel):
    """How a kind of model runs: image, resources, scaling and the parameters Models supply."""

    model_config = ConfigDict(json_schema_extra=cel_rules(*probe_rules("modelType")))

    model_type: ModelType = Field(
        ...,
        description="What the model answers: EMBEDDING, RERANKING, COMPLETION, "
        "CHAT_COMPLETION, AGENT, IMAGE_CLASSIFICATION or CUSTOM.",
    )
    endpoint_type: EndpointType = Field(
        EndpointType.SYNC,
        description="How callers talk to it: SYNC, ASYNC or STREAMING. Default SYNC.",
    )
    image: TemplateImage | None = Field(
        None,
        description="Image every Model of this template runs. Omit it to make each Model name "
        "a ModelVersion instead.",
    )
    command: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Entrypoint override for the worker container.",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Arguments for the worker container.",
    )
    env: dict[EnvName, str] = Field(
        default_factory=dict,
        max_length=MAX_ENV,
        json_schema_extra=cel_rules(
            cel_rule(
                f"self.all(k, k.matches(r'{formats.ENV_NAME}'))",
                "env names must be shaped like environment variable names",
            )
        ),
        description="Environment variables for every worker, as a map of name to value.",
    )
    port: int = Field(
        8080, ge=1, le=65535, description="Port the model server listens on. Default 8080."
    )
    readiness: Readiness = Field(
        default_factory=Readiness,
        description="Readiness check; set initialDelaySeconds for slow-loading models.",
    )
    startup_timeout_seconds: int = Field(
        600,
        ge=0,
        le=86400,
        description="Seconds a worker may take to load its model before it counts as failed "
        "(StartupTimeout). Default 600.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="CPU, memory, storage and GPUs per worker."
    )
    scaling: Scaling = Field(
        default_factory=lambda: Scaling(min_workers=1, max_workers=1),
        description="Worker counts and per-worker concurrency. Default: exactly one worker.",
    )
    high_priority: bool = Field(
        False,
        description="Run workers with the operator's high-priority PriorityClass, so they may "
        "preempt lower-priority pods. Default false.",
    )
    parameters: list[Parameter] = Field(
        default_factory=list,
        max_length=MAX_PARAMETERS,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            **cel_rules(
                cel_rule(
                    "self.all(p, self.exists_one(q, q.name == p.name))",
                    "parameter names must be unique",
                    reason="FieldValueDuplicate",
                )
            ),
        },
        description="Typed parameters every Model of this template must satisfy.",
    )
    probe: Probe | None = Field(
        None,
        description="A sample request sent to each Model once its workers are ready, and again "
        "after every rollout and periodically: the Model is READY only while the answer "
        "conforms to the modelType's response schema (condition Conformant).",
    )
    rollout: Rollout | None = Field(
        None,
        description="How Models of this template take a new revision: Rolling (default) or "
        "Canary, promoted or rolled back by the probe. Models may override it.",
    )
    classes: list[str] = Field(default_factory=list, max_length=1000, description=_CLASSES)
    classes_path: HttpPath | None = Field(None, description=_CLASSES_PATH)
    weights: TemplateWeights | None = Field(
        None,
        description="Where the runtime reads a version's weights: ModelVersions with `weights` "
        "run in this template's image, their weights mounted read-only at mountPath, so one "
        "runtime serves many versions.",
    )

    @model_validator(mode="after")
    def _probe_conforms(self) -> ModelTemplateSpec:
        probe_problems(self.model_type, self.probe)
        return self

    @model_validator(mode="after")
    def _unique_parameters(self) -> ModelTemplateSpec:
        seen: set[str] = set()
        for parameter in self.parameters:
            if parameter.name in seen:
                raise ValueError(f"parameter names must be unique: {parameter.name} repeats")
            seen.add(parameter.name)
        return self


class ModelTemplateStatus(SpecModel):
    """What the operator last saw of the template."""

    model_config = ConfigDict(extra="ignore")

    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = observed_generation_field()
    resolved_digest: str | None = Field(
        None, description="Digest the image tag resolved to, pinned for every Model."
    )
    models: list[str] = Field(
        default_factory=list,
        max_length=10000,
        description="Names of the Models, in this namespace, made from this template.",
    )


class ModelTemplate(Resource):
    """A recipe for running a kind of model, written by a platform team.

    Models are made from it with a few parameters; editing it rolls every Model that uses it.
    """

    info = KindInfo(
        kind="ModelTemplate",
        plural="modeltemplates",
        short_names=["mt"],
        printer_columns=[
            {
                "name": "Type",
                "type": "string",
                "jsonPath": ".spec.modelType",
                "description": "Model type.",
            },
            {
                "name": "Endpoint",
                "type": "string",
                "jsonPath": ".spec.endpointType",
                "description": "Endpoint type.",
            },
            {
                "name": "GPUs",
                "type": "integer",
                "jsonPath": ".spec.resources.gpus",
                "description": "GPUs per worker.",
            },
            {
                "name": "GPU-Type",
                "type": "string",
                "jsonPath": ".spec.resources.gpuType",
                "description": "GPU type.",
            },
            *ready_columns(),
        ],
    )

    spec: ModelTemplateSpec = Field(..., description="How models made from this template run.")
    status: ModelTemplateStatus | None = Field(
        None, description="Observed state of the template, written by the operator."
    )


# --------------------------------------------------------------------------------------------
# ModelVersion
# --------------------------------------------------------------------------------------------


class Link(SpecModel):
    """A related resource, as in the DEEPaaS metadata schema."""

    rel: str = Field(..., min_length=1, max_length=64, description="Relation, e.g. docs.")
    href: Url = Field(..., description="URL of the related resource.")


_ONE_SOURCE = (
    "give exactly one of repository and digest (an image in an OCI registry), weights (files "
    "in an OCI registry, run by the template's image) or mlflow (a version in an MLflow model "
    "registry)"
)


class VersionWeights(SpecModel):
    """A version's weights: an OCI image of files, pinned by digest, that the template's
    runtime reads at its weights mount path."""

    repository: Repository = Field(..., description="Repository path inside the registry.")
    digest: Digest = Field(
        ..., description="Digest of the weights as pushed, `sha256:` plus 64 hex digits."
    )
    tag: Tag | None = Field(
        None,
        description="Tag pushed with the weights; when given it must resolve to digest, and a "
        "later move of the tag is reported.",
    )


class MlflowSource(SpecModel):
    """A registered model version in an MLflow model registry."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "has(self.version) != has(self.alias)",
                "give exactly one of mlflow.version and mlflow.alias",
            )
        )
    )

    name: MlflowModelName = Field(..., description="Name of the registered model in MLflow.")
    version: MlflowVersion | None = Field(
        None, description='MLflow version number of the registered model, e.g. "3".'
    )
    alias: MlflowAlias | None = Field(
        None,
        description="MLflow alias, e.g. champion. It is resolved once, when the operator first "
        "verifies this ModelVersion, and the version number it pointed to is pinned: a later "
        "move of the alias is reported (AliasMoved), never followed.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> MlflowSource:
        if (self.version is None) == (self.alias is None):
            raise ValueError("give exactly one of mlflow.version and mlflow.alias")
        return self


class ModelVersionSpec(SpecModel):
    """One immutable, published version of a named model: an image, or an MLflow version."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(
                "self == oldSelf",
                "a ModelVersion is immutable: publish a new version instead of editing this one",
                reason="FieldValueForbidden",
            ),
            cel_rule(
                "has(self.mlflow) || has(self.weights) ? !has(self.repository) && "
                "!has(self.digest) && !has(self.tag) && !(has(self.mlflow) && "
                "has(self.weights)) : has(self.repository) && has(self.digest)",
                _ONE_SOURCE,
            ),
        )
    )

    model: ModelName = Field(
        ..., description="Logical model name shared by all versions of the model."
    )
    version: SemVer = Field(
        ...,
        description="Semantic version, optionally with a suffix, e.g. 1.1.0 or "
        "1.0.0-initially-released-version-of-our-awesome-model.",
    )
    registry: ObjectName = Field(
        ...,
        description="Name of the Registry, in the same namespace, that holds the image (an "
        "`oci` Registry) or the registered model (an `mlflow` Registry).",
    )
    repository: Repository | None = Field(
        None, description="Repository path inside the registry (an image version)."
    )
    tag: Tag | None = Field(
        None,
        description="Tag pushed with the image; when given it must resolve to digest, and a "
        "later move of the tag is reported.",
    )
    digest: Digest | None = Field(
        None,
        description="Digest of the image as pushed, `sha256:` plus 64 hex digits (an image "
        "version).",
    )
    mlflow: MlflowSource | None = Field(
        None,
        description="The registered model version in an MLflow registry (instead of an image): "
        "Models running it use their template's image, told which model to load by "
        "MODEL_URI=models:/<name>/<version>.",
    )
    weights: VersionWeights | None = Field(
        None,
        description="The version's weights as an OCI image of files in the registry (instead "
        "of an image to run): Models run their template's image with these mounted at the "
        "template's weights.mountPath. Checked to be mountable before any pod refers to them.",
    )
    description: str = Field("", max_length=4096, description="What the model does.")
    author: str = Field("", max_length=256, description="Who made the model.")
    license: str = Field("", max_length=256, description="The model's license.")
    url: Url | None = Field(None, description="Home page or source repository of the model.")
    links: list[Link] = Field(default_factory=list, max_length=32, description="Related resources.")

    def published(self) -> tuple[str, str, str | None] | None:
        """(repository, digest, tag) of what the version publishes in an OCI registry, its
        image or its weights; None for a version from MLflow."""
        if self.weights is not None:
            return self.weights.repository, self.weights.digest, self.weights.tag
        if self.repository is not None and self.digest is not None:
            return self.repository, self.digest, self.tag
        return None

    @model_validator(mode="after")
    def _one_source(self) -> ModelVersionSpec:
        image = self.repository is not None and self.digest is not None
        if self.mlflow is not None or self.weights is not None:
            if (
                self.repository is not None
                or self.digest is not None
                or self.tag is not None
                or (self.mlflow is not None and self.weights is not None)
            ):
                raise ValueError(_ONE_SOURCE)
        elif not image:
            raise ValueError(_ONE_SOURCE)
        return self


class SignatureColumn(SpecModel):
    """One input column of an MLflow model's signature."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(..., description="The column's name.")
    type: str = Field(..., description="Its MLflow type (double, long, string, ...).")
    required: bool = Field(
        True, description="False for an optional column (MLflow takes a sample without it)."
    )


class MlflowSignature(SpecModel):
    """The input side of an MLflow model's signature, as its MLmodel file declares it."""

    model_config = ConfigDict(extra="ignore")

    inputs: list[SignatureColumn] = Field(
        default_factory=list,
        description="The input columns the model takes; an MLflow probe's sample must name "
        "every required one, or it is not sent (ProbeRefused).",
    )


class MlflowFiles(SpecModel):
    """A version's files as the tracking server served them when the operator pinned them."""

    model_config = ConfigDict(extra="ignore")

    artifacts: str = Field(
        ..., description="Where the tracking server keeps them (its proxied artifacts' path)."
    )
    digest: str = Field(
        ...,
        description="One digest of them all: SHA-256 over `sha256sum`'s lines of every file, "
        "sorted by path.",
    )
    size_bytes: int = Field(0, ge=0, description="Their size, in bytes.")
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Each file's SHA-256 (hex), by its path."
    )


class MlflowResolution(SpecModel):
    """What the operator found in MLflow for a version, pinned at first verification."""

    model_config = ConfigDict(extra="ignore")

    version: str = Field(..., description="The MLflow version number Models run.")
    model_uri: str = Field(..., description="`models:/<name>/<version>`, as pods receive it.")
    run_id: str | None = Field(None, description="ID of the MLflow run that made the model.")
    source: str | None = Field(None, description="Where MLflow says the model's files are.")
    created_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="When the version was registered in MLflow (RFC 3339).",
    )
    alias_version: str | None = Field(
        None,
        description="The version the alias points to now; differs from version when the alias "
        "moved after it was pinned.",
    )
    signature: MlflowSignature | None = Field(
        None,
        description="The model's signature (its named input columns) when it has one and the "
        "tracking server serves its files (proxied artifacts).",
    )
    files: MlflowFiles | None = Field(
        None,
        description="The version's files, pinned by content at verification: workers of a "
        "template with weights.mountPath load exactly these bytes, or do not start. Absent "
        "when the tracking server does not serve the files (proxied artifacts).",
    )
    files_problem: str | None = Field(
        None, description="Why the files could not be pinned at the last attempt."
    )

    def required_inputs(self) -> tuple[str, ...]:
        """The columns a sample must name: none when there is no signature."""
        if self.signature is None:
            return ()
        return tuple(column.name for column in self.signature.inputs if column.required)


class ModelVersionStatus(SpecModel):
    """What the operator last verified about the version."""

    model_config = ConfigDict(extra="ignore")

    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = observed_generation_field()
    image: str | None = Field(
        None, description="Image reference pods run, `host/repository@sha256:...`."
    )
    tag_digest: str | None = Field(
        None,
        description="Digest the tag points to now; differs from spec.digest when the tag moved.",
    )
    verified_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description="When the digest was last verified against the registry (RFC 3339).",
    )
    mlflow: MlflowResolution | None = Field(
        None, description="The MLflow version found and pinned, for versions from MLflow."
    )
    weights: str | None = Field(
        None,
        description="Weights reference pods mount, `host/repository@sha256:...`, once "
        "verified and found mountable.",
    )


class ModelVersion(Resource):
    """A published, verified version of a model image, pinned by digest.

    The operator checks the digest against the registry; only verified versions reach a
    Deployment. The spec cannot change after creation.
    """

    info = KindInfo(
        kind="ModelVersion",
        plural="modelversions",
        short_names=["mv"],
        printer_columns=[
            {
                "name": "Model",
                "type": "string",
                "jsonPath": ".spec.model",
                "description": "Logical model name.",
            },
            {
                "name": "Version",
                "type": "string",
                "jsonPath": ".spec.version",
                "description": "Semantic version.",
            },
            *ready_columns(),
            {
                "name": "Image",
                "type": "string",
                "jsonPath": ".status.image",
                "priority": 1,
                "description": "Verified image reference.",
            },
            {
                "name": "Signed",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Signed")].reason',
                "priority": 1,
                "description": "What the image's cosign signatures say, under a Registry's "
                "signature policy.",
            },
            {
                "name": "Model URI",
                "type": "string",
                "jsonPath": ".status.mlflow.modelUri",
                "priority": 1,
                "description": "Pinned MLflow model URI, for versions from MLflow.",
            },
        ],
    )

    spec: ModelVersionSpec = Field(..., description="The published image; immutable.")
    status: ModelVersionStatus | None = Field(
        None, description="Verification result, written by the operator."
    )


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class ModelState(StrEnum):
    """Where a Model stands, in one word."""

    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    READY = "READY"
    SCALED_TO_ZERO = "SCALED_TO_ZERO"
    FAILED = "FAILED"


class VersionSelector(SpecModel):
    """Which ModelVersion to run."""

    model: ModelName = Field(..., description="Logical model name of the ModelVersions.")
    version: VersionRange = Field(
        ...,
        description="An exact version (1.1.0) or a range (>=1.0.0 <2.0.0, ^1.2, ~1.2.3); "
        "the highest Ready version that matches runs.",
    )


class ScalingOverride(SpecModel):
    """Per-Model changes to the template's scaling; unset fields keep the template's values."""

    model_config = ConfigDict(json_schema_extra=cel_rules(_MIN_LE_MAX))

    min_workers: int | None = Field(
        None, ge=0, le=MAX_WORKERS, description="Fewest workers; 0 allows scale to zero."
    )
    max_workers: int | None = Field(None, ge=1, le=MAX_WORKERS, description="Most workers.")
    per_worker: int | None = Field(
        None, ge=1, le=100000, description="Target concurrent requests per worker."
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ScalingOverride:
        if (
            self.min_workers is not None
            and self.max_workers is not None
            and self.min_workers > self.max_workers
        ):
            raise ValueError(
                f"minWorkers ({self.min_workers}) must not exceed maxWorkers ({self.max_workers})"
            )
        return self


class EndpointCredentials(SpecModel):
    """A header carrying a secret value, taken from a Secret in the Model's namespace."""

    secret_name: ObjectName = Field(
        ..., description="Name of the Secret, in the Model's namespace, holding the value."
    )
    key: SecretKey = Field("token", description="Key of the Secret's data. Default token.")
    header: HeaderName = Field(
        "Authorization",
        description="HTTP header the value is sent in, e.g. X-Api-Key. Default Authorization.",
    )
    scheme: str | None = Field(
        None,
        max_length=64,
        description="Word put before the value, e.g. Bearer. Default: Bearer for the "
        "Authorization header, nothing for any other header.",
    )


_EXTERNAL_ALONE = (
    "an external model takes no version, parameters, scaling or rollout: it runs elsewhere"
)
_ONE_KIND = (
    "give exactly one of template (a model run in this cluster) and external (a model served "
    "elsewhere, by URL)"
)


_NO_USERINFO = (
    "put credentials in a Secret (external.credentials), not in the URL: the URL is shown in "
    "the Model's status"
)


class ExternalModel(SpecModel):
    """A model served outside the cluster, registered by URL once it answers."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule(r"!self.url.matches('^https?://[^/?#]*@')", _NO_USERINFO, field_path=".url"),
            *probe_rules("modelType"),
        )
    )

    url: Url = Field(
        ...,
        description="Base URL of the model server, e.g. https://reranker.example.com. A host "
        "name also becomes a Service of type ExternalName named after the Model.",
    )
    model_type: ModelType = Field(
        ...,
        description="What the model answers: EMBEDDING, RERANKING, COMPLETION, "
        "CHAT_COMPLETION, AGENT, IMAGE_CLASSIFICATION or CUSTOM; decides the probe's "
        "schemas.",
    )
    health_path: HttpPath | None = Field(
        None,
        description="Path that answers GET with 2xx while the server is up, e.g. /health. "
        "Without it (and without a probe), any answer of the server counts as up.",
    )
    credentials: EndpointCredentials | None = Field(
        None, description="A Secret whose value is sent in a header with every request."
    )
    tls: RegistryTLS | None = Field(
        None, description="TLS settings, for a server with a private certificate authority."
    )
    classes: list[str] = Field(default_factory=list, max_length=1000, description=_CLASSES)
    classes_path: HttpPath | None = Field(None, description=_CLASSES_PATH)
    probe: Probe | None = Field(
        None,
        description="A sample request: the Model is READY only while the answer conforms to "
        "the modelType's response schema.",
    )

    @model_validator(mode="after")
    def _probe_conforms(self) -> ExternalModel:
        if formats.matches(r"^https?://[^/?#]*@", self.url):
            raise ValueError(_NO_USERINFO)
        probe_problems(self.model_type, self.probe)
        return self


class ModelSpec(SpecModel):
    """A running model: a template, optionally a version, and the template's parameters; or
    an external model served elsewhere."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            cel_rule("has(self.template) != has(self.external)", _ONE_KIND),
            cel_rule(
                "!has(self.external) || (!has(self.version) && !has(self.scaling) && "
                "!has(self.rollout))",
                _EXTERNAL_ALONE,
            ),
        )
    )

    template: ObjectName | None = Field(
        None,
        description="Name of the ModelTemplate, in the same namespace, to run. Exactly one of "
        "template and external.",
    )
    external: ExternalModel | None = Field(
        None,
        description="A model served outside the cluster, by URL: no Deployment; READY while it "
        "answers (and conforms, with a probe). Exactly one of template and external.",
    )
    version: VersionSelector | None = Field(
        None,
        description="The ModelVersion to run; required when the template has no image, and "
        "it replaces the template's image when both are given.",
    )
    # No CEL here: the values are untyped, and the apiserver cannot declare a map with untyped
    # values to CEL at all (it refuses the whole CRD). Names and value types are checked by
    # these models instead, so the Model's status says `InvalidSpec` with the offending key.
    parameters: dict[EnvName, ScalarValue] = Field(
        default_factory=dict,
        max_length=MAX_PARAMETERS,
        description="Values for the template's parameters, by name: strings, numbers or "
        "booleans. Secret parameters take `secret-name/key`.",
    )
    scaling: ScalingOverride | None = Field(
        None, description="Changes to the template's scaling for this Model only."
    )
    rollout: RolloutOverride | None = Field(
        None, description="Changes to the template's rollout for this Model only."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSpec:
        if (self.template is None) == (self.external is None):
            raise ValueError(_ONE_KIND)
        if self.external is not None and (
            self.version is not None
            or self.scaling is not None
            or self.rollout is not None
            or self.parameters
        ):
            raise ValueError(_EXTERNAL_ALONE)
        return self


class RolloutPhase(StrEnum):
    """Where a rollout stands."""

    #: A new revision's weights being pulled onto the nodes of the serving workers, before
    #: any worker of it starts (a canary, or a rolling update).
    WARMING = "Warming"
    CANARY = "Canary"
    AWAITING_CAPACITY = "AwaitingCapacity"
    ANALYSING = "Analysing"
    PROMOTING = "Promoting"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


class RolloutStatus(SpecModel):
    """The last canary rollout (or a scale-up waiting for its weights): from what, to what,
    where it stands, and why it stopped."""

    model_config = ConfigDict(extra="ignore")

    phase: RolloutPhase = Field(
        ...,
        description="Warming (the new revision's weights being pulled onto the serving "
        "workers' nodes first, or the weights onto a scale-up's new workers' nodes), Canary "
        "(its workers starting), AwaitingCapacity (no room for "
        "them), Analysing (answering the probe; promoted after analysisSeconds), Promoting (the "
        "current workers rolling to it), Promoted, or RolledBack.",
    )
    current: str = Field("", description="What serves: version and image.")
    candidate: str = Field("", description="The new revision: version and image.")
    candidate_revision: str = Field(
        "", description="The new revision's pod-template hash (modelyard.dev/spec-hash)."
    )
    reason: str = Field(
        "", description="Why it is where it is: a rollback's cause, e.g. SchemaMismatch."
    )
    message: str = Field("", description="The same, in words.")
    conforming_since: str | None = Field(
        None, description="Since when the canary has answered correctly (RFC 3339)."
    )
    model_generation: int | None = Field(
        None,
        description="The Model's generation when rolled back: the same revision is not tried "
        "again until the Model changes (or its version does, which makes another revision).",
    )
    dipped_from: int | None = Field(
        None,
        ge=0,
        description="Serving workers before one made room for the canary (allowCapacityDip); "
        "their count comes back when the rollout ends, however it ends.",
    )
    warmed_on: list[str] = Field(
        default_factory=list,
        description="The nodes the new revision's weights were pulled onto before its workers "
        "started; the canary prefers them.",
    )
    warming_since: str | None = Field(
        None, description="Since when the rollout has waited for its weights (RFC 3339)."
    )
    warming_refused: str | None = Field(
        None,
        description="Why the API server refused a warming pod (a quota, a policy): the rollout "
        "went on without warming.",
    )
    scale_up_to: int | None = Field(
        None,
        ge=1,
        description="A scale-up held back while the weights are pulled onto its new workers' "
        "nodes (minWorkers raised): the count of workers it goes to once they are.",
    )


#: What a model's server says of it, as its protocol publishes it: open, since each protocol
#: says different things.
ServerMetadata = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


class ServerStatus(SpecModel):
    """The model as its server describes it, recorded by the probe."""

    model_config = ConfigDict(extra="ignore")

    protocol: ProbeProtocol = Field(..., description="The protocol the server was asked in.")
    model: str | None = Field(None, description="The model's name or id in its server.")
    metadata: ServerMetadata = Field(
        default_factory=dict,
        description="What the server publishes of the model: DEEPaaS's metadata (id, name, "
        "description, license, author, version, url, links), the Open Inference Protocol's "
        "(name, versions, platform, inputs, outputs).",
    )


class ModelStatus(SpecModel):
    """What is running for the Model, and whether it serves."""

    model_config = ConfigDict(extra="ignore")

    state: ModelState | None = Field(
        None,
        description="PENDING, DEPLOYING, READY, SCALED_TO_ZERO or FAILED.",
    )
    conditions: list[Condition] = conditions_field()
    observed_generation: int | None = observed_generation_field()
    image: str | None = Field(
        None, description="Image the workers run, by digest (`host/repository@sha256:...`)."
    )
    resolved_version: str | None = Field(
        None, description="The ModelVersion's version the Model runs, when it names one."
    )
    replicas: int | None = Field(None, ge=0, description="Workers that exist.")
    ready_replicas: int | None = Field(None, ge=0, description="Workers ready for requests.")
    endpoint: str | None = Field(
        None,
        description="URL of the model: in-cluster, e.g. http://name.namespace.svc:8080, or an "
        "external model's own URL.",
    )
    rollout: RolloutStatus | None = Field(
        None, description="The last canary rollout (templates or Models with strategy Canary)."
    )
    classes: list[str] | None = Field(
        None,
        max_length=1000,
        description="The classes the model server offers (GET classesPath), when none are "
        "registered.",
    )
    server: ServerStatus | None = Field(
        None,
        description="The model as its server describes it (DEEPaaS, OpenInference probes).",
    )


class Model(Resource):
    """A running model made from a ModelTemplate, a ModelVersion and parameters.

    The operator turns it into a Deployment, a Service and an autoscaler named after it, and
    reports in status whether it serves requests.
    """

    info = KindInfo(
        kind="Model",
        plural="models",
        short_names=["mdl"],
        printer_columns=[
            {
                "name": "Template",
                "type": "string",
                "jsonPath": ".spec.template",
                "description": "ModelTemplate it is made from.",
            },
            {
                "name": "Version",
                "type": "string",
                "jsonPath": ".status.resolvedVersion",
                "description": "ModelVersion it runs.",
            },
            {
                "name": "State",
                "type": "string",
                "jsonPath": ".status.state",
                "description": "PENDING, DEPLOYING, READY, SCALED_TO_ZERO or FAILED.",
            },
            *ready_columns(),
            {
                "name": "Replicas",
                "type": "integer",
                "jsonPath": ".status.readyReplicas",
                "description": "Workers ready for requests.",
            },
            {
                "name": "Rollout",
                "type": "string",
                "jsonPath": ".status.rollout.phase",
                "description": "Where the last canary rollout stands (Analysing, RolledBack, ...).",
            },
            {
                "name": "Autoscaling",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Autoscaling")].reason',
                "description": "How it scales, or why it cannot (MetricsUnavailable, ...).",
            },
            {
                "name": "Endpoint",
                "type": "string",
                "jsonPath": ".status.endpoint",
                "priority": 1,
                "description": "In-cluster URL.",
            },
        ],
    )

    spec: ModelSpec = Field(..., description="What to run.")
    status: ModelStatus | None = Field(
        None, description="What runs and whether it serves, written by the operator."
    )


KINDS: tuple[type[Resource], ...] = (Registry, ModelTemplate, ModelVersion, Model)

#: A Model's canary Deployment is named after it with this suffix, so no Model may end so.
CANARY_SUFFIX = "-canary"


@dataclasses.dataclass(frozen=True)
class NameRule:
    """A rule on a whole object's name, said once: the apiserver enforces it as CEL (only
    metadata.name is reachable from the root), `parse` as Python, with the same message."""

    cel: str
    holds: Callable[[str], bool]
    message: str


_NAME_RULES: dict[str, tuple[NameRule, ...]] = {
    "Model": (
        NameRule(
            cel=f"self.metadata.name.matches(r'{formats.SERVICE_NAME}') && "
            f"size(self.metadata.name) <= {formats.SERVICE_NAME_MAX}",
            holds=lambda name: (
                formats.matches(formats.SERVICE_NAME, name)
                and len(name) <= formats.SERVICE_NAME_MAX
            ),
            message="a Model's name becomes its Service's name: lowercase letters, digits and "
            "'-', starting with a letter, at most 63 characters",
        ),
        NameRule(
            cel=f"!self.metadata.name.endsWith('{CANARY_SUFFIX}')",
            holds=lambda name: not name.endswith(CANARY_SUFFIX),
            message=f"a Model's name may not end in {CANARY_SUFFIX}: that is the name of "
            "another Model's canary Deployment",
        ),
    )
}


def root_rules(kind: str) -> list[dict[str, str]]:
    """CEL rules on the whole object, for the CRD."""
    return [cel_rule(rule.cel, rule.message) for rule in _NAME_RULES.get(kind, ())]


def parse(manifest: dict[str, Any]) -> Resource:
    """Read a manifest of one of the four kinds into its typed model."""
    by_kind = {cls.info.kind: cls for cls in KINDS}
    kind = manifest.get("kind")
    if manifest.get("apiVersion") != API_VERSION or kind not in by_kind:
        raise ValueError(f"not a {API_VERSION} kind: {manifest.get('apiVersion')}/{kind}")
    # Strict JSON mode gives the wire's semantics: "300" is not an integer, as on the apiserver.
    resource = by_kind[kind].model_validate_json(json.dumps(manifest), strict=True)
    for rule in _NAME_RULES.get(kind, ()):
        if not rule.holds(resource.metadata.name):
            raise ValueError(rule.message)
    return resource
