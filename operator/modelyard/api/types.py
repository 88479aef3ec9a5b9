"""Building blocks shared by every kind: the base model, shaped strings, CEL rules, conditions.

The base model forbids unknown fields because the operator and `modelyard render` read manifests
through these classes: a misspelt field (`minWorker`) must be an error there, just as the
apiserver's pruning would silently drop it otherwise. The generated CRD does not carry
`additionalProperties: false` (structural schemas forbid it); see `modelyard.api.crds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from kube_custom_resource import schema as kcr
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from modelyard.api import formats


def cel_rule(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; a message is mandatory so users never see raw CEL."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` for a model or field that carries CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


class SpecModel(kcr.BaseModel):
    """Base for every nested object in the API.

    Drops the class docstring from the schema so the *field's* description is what
    `kubectl explain` shows; docstrings here are written for developers, not for users.
    """

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema: JsonSchemaValue = super().__get_pydantic_json_schema__(core_schema, handler)
        json_schema.pop("description", None)
        return json_schema


class StrEnum(str, kcr.Enum):
    """A string enum whose schema carries no title (titles are noise in a CRD), nor its class
    docstring, so the *field's* description is what `kubectl explain` shows."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema: JsonSchemaValue = handler(core_schema)
        json_schema.pop("description", None)
        return json_schema


class _ShapedString:
    """Attaches a CEL `matches()` rule with a readable message to a string type.

    A plain `pattern` would make the apiserver answer with the regular expression itself;
    the CEL rule answers with a sentence.
    """

    def __init__(self, pattern: str, message: str) -> None:
        self.pattern = pattern
        self.message = message

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(
            cel_rule(f"self.matches(r'{self.pattern}')", self.message)
        )
        return json_schema


def shaped(pattern: str, max_length: int, message: str) -> Any:
    """A string that must match `pattern`, checked identically by pydantic and by the apiserver."""

    def check(value: str) -> str:
        if not formats.matches(pattern, value):
            raise ValueError(message)
        return value

    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(check),
        _ShapedString(pattern, message),
    ]


ObjectName = shaped(
    formats.OBJECT_NAME,
    formats.OBJECT_NAME_MAX,
    "must be a Kubernetes object name: lowercase letters, digits, '-' and '.'",
)
ModelName = shaped(
    formats.MODEL_NAME,
    formats.MODEL_NAME_MAX,
    "must be a model name: lowercase letters, digits, '-', '_' and '.', at most 63 characters",
)
EnvName = shaped(
    formats.ENV_NAME,
    formats.ENV_NAME_MAX,
    "must be shaped like an environment variable name: letters, digits and '_', "
    "not starting with a digit",
)
Digest = shaped(formats.DIGEST, 71, "must be 'sha256:' followed by 64 lowercase hex digits")
SemVer = shaped(
    formats.SEMVER,
    256,
    "must be a semantic version such as 1.2.3 or 1.0.0-initially-released-version",
)
VersionRange = shaped(
    formats.VERSION_RANGE,
    256,
    "version must be an exact semantic version or a range such as '>=1.0.0 <2.0.0'",
)
Repository = shaped(
    formats.REPOSITORY,
    formats.REPOSITORY_MAX,
    "must be a repository path such as 'team/reranker' (lowercase, '/'-separated)",
)
Tag = shaped(formats.TAG, 128, "must be an image tag: letters, digits, '_', '.' and '-'")
MlflowModelName = shaped(
    formats.MLFLOW_MODEL_NAME,
    formats.MLFLOW_MODEL_NAME_MAX,
    "must be an MLflow registered model name: no '/' or ':', no space at either end",
)
MlflowVersion = shaped(formats.MLFLOW_VERSION, 18, "must be an MLflow version number: 1, 2, 3…")
MlflowAlias = shaped(
    formats.MLFLOW_ALIAS, 255, "must be an MLflow alias: letters, digits, '_' and '-'"
)
Url = shaped(formats.URL, formats.URL_MAX, "must be an http:// or https:// URL")
HttpPath = shaped(formats.HTTP_PATH, 1024, "must be an HTTP path starting with '/'")
MountPath = shaped(
    formats.MOUNT_PATH,
    512,
    "must be an absolute path such as /models, without '.' or '..' segments",
)
HeaderName = shaped(formats.HEADER_NAME, 256, "must be an HTTP header name, e.g. X-Api-Key")
SecretKey = shaped(
    formats.SECRET_KEY, 253, "must be a key of a Secret: letters, digits, '-', '_' and '.'"
)


class _Quantity:
    """Kubernetes resource quantities: `1`, `500m`, `8Gi`; an integer or a string on the wire."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        json_schema.update(
            {
                "minimum": 0,
                "maxLength": 64,
                "x-kubernetes-validations": [
                    cel_rule(
                        f"type(self) == int || self.matches(r'{formats.QUANTITY}')",
                        "must be a non-negative quantity such as 1, 500m, 8Gi or 16Gi",
                    )
                ],
            }
        )
        return json_schema


def _check_quantity(value: str) -> str:
    if not formats.matches(formats.QUANTITY, value):
        raise ValueError("must be a non-negative quantity such as 1, 500m, 8Gi or 16Gi")
    return value


Quantity = Annotated[kcr.IntOrString, AfterValidator(_check_quantity), _Quantity]


class _ScalarValue:
    """A parameter value: string, integer, number or boolean.

    The schema keeps the value untyped (`x-kubernetes-preserve-unknown-fields`) because a
    structural schema cannot express "one of several scalar types". An untyped value is invisible
    to the apiserver's CEL, so lists and objects are refused by pydantic (the operator's status),
    not at apply time.
    """

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"x-kubernetes-preserve-unknown-fields": True}


#: Strict booleans and integers: in lax mode pydantic reads 0 and 1 as booleans, and a float
#: parameter's default of 0 would become `false`.
ScalarValue = Annotated[
    str | StrictBool | StrictInt | float, Field(union_mode="left_to_right"), _ScalarValue
]


class ConditionStatus(StrEnum):
    """Condition status values, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(SpecModel):
    """The metav1.Condition shape, so kubectl, Argo CD and `kubectl wait` understand it."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        ...,
        max_length=316,
        description="Type of condition in CamelCase, for example Ready.",
    )
    status: ConditionStatus = Field(
        ..., description="Status of the condition: True, False or Unknown."
    )
    reason: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="A CamelCase word saying why the condition has its status; stable, "
        "for machines.",
    )
    message: str = Field(
        "",
        max_length=32768,
        description="A human-readable sentence with details about the transition.",
    )
    last_transition_time: str = Field(
        ...,
        json_schema_extra={"format": "date-time"},
        description="When the condition last changed status (RFC 3339).",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The metadata.generation of the object that the condition was set from.",
    )


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
        max_length=32,
        description="Current state of the object as conditions; Ready rolls up the others.",
    )


def observed_generation_field() -> Any:
    return Field(
        None,
        ge=0,
        description="The metadata.generation that the status was last computed from; "
        "when it is behind metadata.generation, the status is stale.",
    )


def ready_columns() -> list[dict[str, Any]]:
    """READY and REASON printer columns, read from the Ready condition."""
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Whether the object is ready.",
        },
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "description": "Why it is, or is not, ready.",
        },
    ]


@dataclass(frozen=True)
class KindInfo:
    """What a CRD says about a kind besides its schema."""

    kind: str
    plural: str
    short_names: list[str]
    printer_columns: list[dict[str, Any]] = field(default_factory=list)


class ObjectMeta(SpecModel):
    """The parts of metav1.ObjectMeta the operator reads; the rest is ignored, not refused."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(..., description="Name of the object.")
    namespace: str | None = Field(None, description="Namespace of the object.")
    uid: str | None = Field(None, description="Unique id assigned by the apiserver.")
    generation: int | None = Field(None, description="Sequence number of spec changes.")
    resource_version: str | None = Field(None, description="Version for optimistic locking.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    deletion_timestamp: str | None = Field(None, description="When deletion was requested.")


class Resource(kcr.BaseModel):
    """Base of the four kinds: apiVersion, kind and metadata around a typed spec and status.

    Unknown top-level fields are refused like unknown spec fields; `status` is typed per kind.
    """

    model_config = ConfigDict(extra="forbid")

    info: ClassVar[KindInfo]

    api_version: str = Field(..., description="modelyard.dev/v1alpha1")
    kind: str = Field(..., description="The kind.")
    metadata: ObjectMeta = Field(..., description="Standard object metadata.")
