"""What a model of each type is sent and must answer: the request and response contracts.

Field for field as the GenAI platform's custom-model guide lists them (seed 002), with the same
snake_case names on the wire, so a client written for that platform talks to a modelyard Model
unchanged. They are defined once, here: `modelyard schemas` prints the JSON Schema generated
from them, `modelyard validate-request` checks a request against them, the CRDs take the shape
of a probe's sample request from them, and the operator judges a model's answers with them.

Requests forbid unknown fields (a misspelt `chunk` must be named, not ignored); responses
accept extra fields (servers add token counts and timings) but not missing or mistyped ones.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from modelyard.api import protocols


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- messages, as chat and agent models exchange them -----------------------------------------


class ToolRequest(_Part):
    """A request to run a tool."""

    name: str = Field(..., description="Name of the tool that the AI wants the client to use.")
    arguments: str = Field(
        ...,
        description="Arguments to pass to the tool: a JSON Schema-compliant object serialized "
        "into a string.",
    )


class UserMessage(_Part):
    role: Literal["user"] = Field("user", description='Must be "user".')
    content: str = Field(..., description="The content of the message.")


class AssistantMessage(_Part):
    role: Literal["assistant"] = Field("assistant", description='Must be "assistant".')
    content: str = Field(..., description="The content of the message.")


class SystemMessage(_Part):
    role: Literal["system"] = Field("system", description='Must be "system".')
    content: str = Field(..., description="The content of the message.")


class ToolMessage(_Part):
    role: Literal["tool"] = Field("tool", description='Must be "tool".')
    name: str = Field(..., description="Name of the tool.")
    content: str = Field(..., description="Output of calling the tool (JSON serialized).")


class AgentMessage(_Part):
    role: Literal["agent"] = Field("agent", description='Must be "agent".')
    content: str | None = Field(None, description="Output of the agent if finished.")
    tool_request: ToolRequest | None = Field(None, description="Request to run a tool.")


Message = Annotated[
    UserMessage | AssistantMessage | SystemMessage | ToolMessage | AgentMessage,
    Field(discriminator="role"),
]


class LastKParams(_Part):
    k: int = Field(..., ge=1, description="The maximum number of previous messages to remember.")


class LastKMemoryStrategy(_Part):
    """Truncates the message history to the last k messages."""

    name: Literal["last_k"] = Field("last_k", description="Must be last_k.")
    params: LastKParams = Field(..., description="Parameters of the memory strategy.")


class ToolArguments(_Part):
    type: Literal["object"] = Field("object", description='Only "object" is supported.')
    properties: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Each keyword argument's name and the JSON Schema its value must satisfy.",
    )


class Tool(_Part):
    name: str = Field(..., pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="Name of the tool.")
    description: str = Field(..., description="When the agent should use the tool.")
    arguments: ToolArguments = Field(
        ..., description="A JSON Schema-compliant schema of the tool's arguments."
    )


class AgentAction(StrEnum):
    TOOL_REQUEST = "tool_request"
    CONTENT = "content"


class ActionContext(_Response):
    content: str | None = Field(
        None, description="The final output of the agent when it no longer needs any tools."
    )
    tool_request: ToolRequest | None = Field(
        None, description="The tool request if the agent needs more information."
    )


# -- the six contracts ------------------------------------------------------------------------

_TEMPERATURE = (
    "What sampling temperature to use, between [0, 1]. Higher values like 0.8 will make the "
    "output more random, while lower values like 0.2 will make it more focused and "
    "deterministic. Setting temperature=0.0 will enable fully deterministic (greedy) sampling."
)
_STOP = (
    "List of up to 4 sequences where the API will stop generating further tokens. The returned "
    "text will not contain the stop sequence."
)
_MAX_TOKENS = (
    "The maximum number of tokens to generate in the completion. The token count of your "
    "prompt plus max_tokens cannot exceed the model's context length. If not specified, "
    "max_tokens will be determined based on the model used."
)


class EmbeddingRequest(_Request):
    """Request schema for embedding models."""

    texts: list[str] = Field(..., description="List of texts to get embeddings for.")


class EmbeddingResponse(_Response):
    """Response schema for embedding models."""

    embeddings: list[tuple[str, list[float]]] = Field(
        ..., description="List of text, embedding pairs."
    )


class RerankingRequest(_Request):
    """Request schema for reranking models."""

    query: str = Field(..., description="Query to rerank chunks against in order of relevance.")
    chunks: list[str] = Field(..., description="List of chunks to rerank.")


class RerankingResponse(_Response):
    """Response schema for reranking models."""

    chunk_scores: list[float] = Field(
        ...,
        description="List of scores for each chunk in the same order as the input chunks.",
    )


class ImageSource(_Part):
    """Where the image is: a URL its server fetches, or the image itself."""

    url: str | None = Field(
        None, min_length=1, description="URL of the image; the model server fetches it."
    )
    base64: str | None = Field(
        None, min_length=1, description="The image's bytes, base64-encoded (RFC 4648)."
    )

    @field_validator("base64")
    @classmethod
    def _decodes(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                binascii.a2b_base64(value.encode(), strict_mode=True)
            except (binascii.Error, ValueError):
                raise ValueError("not valid base64: the image's bytes do not decode") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSource:
        if (self.url is None) == (self.base64 is None):
            raise ValueError("give exactly one of url and base64")
        return self


class ImageClassificationRequest(_Request):
    """Request schema for image classification models (the annotation tool's POST /api/infer)."""

    image: ImageSource = Field(
        ..., description="The image to classify: exactly one of url and base64."
    )


class ClassificationResult(_Response):
    """One thing the model found in the image."""

    name: str = Field(..., description="What the result is called (the object or region).")
    label: str = Field(..., description="The class predicted: one of the model's classes.")
    confidence: float = Field(..., ge=0.0, le=1.0, description="How sure, from 0 to 1.")
    tag: dict[str, Any] | None = Field(
        None, description="Anything else about the result (a bounding box, a mask), as an object."
    )


class ImageClassificationResponse(_Response):
    """Response schema for image classification models."""

    status: Literal["succeeded", "failed"] = Field(
        ..., description='"succeeded", or "failed" when the model could not classify the image.'
    )
    results: list[ClassificationResult] = Field(
        ..., description="What the model found, each with its label and confidence."
    )


class CompletionRequest(_Request):
    """Request schema for completion models."""

    temperature: float = Field(0.2, ge=0.0, le=1.0, description=_TEMPERATURE)
    stop_sequences: list[str] | None = Field(None, max_length=4, description=_STOP)
    max_tokens: int | None = Field(None, ge=1, description=_MAX_TOKENS)
    prompts: list[str] = Field(..., description="List of prompts to generate completions for.")


class CompletionResponse(_Response):
    """Response schema for completion models."""

    completions: list[tuple[str, list[str]]] = Field(
        ..., description="List of prompt, completion pairs."
    )
    finish_reason: str | None = Field(None, description="The reason the completion finished.")


class ChatCompletionRequest(_Request):
    """Request schema for chat completion models."""

    temperature: float = Field(0.2, ge=0.0, le=1.0, description=_TEMPERATURE)
    stop_sequences: list[str] | None = Field(None, max_length=4, description=_STOP)
    max_tokens: int | None = Field(None, ge=1, description=_MAX_TOKENS)
    messages: list[Message] = Field(
        ...,
        description="List of messages for the chat completion to consider when generating a "
        "response.",
    )


class ChatCompletionResponse(_Response):
    """Response schema for chat completion models."""

    message: Message = Field(..., description="The generated message from the chat completion.")
    finish_reason: str | None = Field(None, description="The reason the chat completion finished.")


class AgentRequest(_Request):
    """Request schema for agents."""

    memory_strategy: LastKMemoryStrategy | None = Field(
        None,
        description="The memory strategy to use for the agent: a way to keep the underlying "
        "LLM's context limit from being exceeded by condensing the message list.",
    )
    tools: list[Tool] = Field(
        ...,
        description="The specs of the tools the agent can use, each with a name, a description "
        "and a JSON Schema of its arguments.",
    )
    messages: list[Message] = Field(..., description="The list of messages in the conversation.")
    instructions: str | None = Field(
        None, description="The initial instructions to provide to the agent."
    )


class AgentResponse(_Response):
    """Response schema for agents."""

    action: AgentAction = Field(..., description="The action that the agent performed.")
    context: ActionContext = Field(
        ...,
        description="Context object containing the output payload: only the key of the action "
        "performed has a value.",
    )


@dataclass(frozen=True)
class Contract:
    request: type[BaseModel]
    response: type[BaseModel]


#: By the model types of `modelyard.api.v1alpha1.ModelType`; CUSTOM has none (any JSON object).
CONTRACTS: dict[str, Contract] = {
    "EMBEDDING": Contract(EmbeddingRequest, EmbeddingResponse),
    "RERANKING": Contract(RerankingRequest, RerankingResponse),
    "COMPLETION": Contract(CompletionRequest, CompletionResponse),
    "CHAT_COMPLETION": Contract(ChatCompletionRequest, ChatCompletionResponse),
    "AGENT": Contract(AgentRequest, AgentResponse),
    "IMAGE_CLASSIFICATION": Contract(ImageClassificationRequest, ImageClassificationResponse),
}


def _type_name(model_type: Any) -> str:
    """ "RERANKING" from the enum member or the string."""
    return str(getattr(model_type, "value", model_type))


_ANY_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def _location(loc: tuple[int | str, ...]) -> str:
    """`messages[0].content`, as a user would point at the field."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(the whole payload)"


def problems(error: ValidationError) -> list[str]:
    """One line per wrong field, naming it; the discriminator's branch name is left out."""
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(p for p in item["loc"] if p not in _MESSAGE_TAGS)
        message = item["msg"]
        if item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{_location(loc)}: {message}")
    return lines


_MESSAGE_TAGS = frozenset({"user", "assistant", "system", "tool", "agent"})


def _check(model: type[BaseModel] | None, payload: Any) -> list[str]:
    if model is None:
        try:
            _ANY_JSON_OBJECT.validate_python(payload)
        except ValidationError as error:
            return problems(error)
        return []
    try:
        # Strict JSON semantics: "0.5" is not a number, as it is not on the wire.
        model.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as error:
        return problems(error)
    return []


def check_request(model_type: str, payload: Any) -> list[str]:
    """What is wrong with `payload` as a request to a model of this type; empty when nothing."""
    contract = CONTRACTS.get(_type_name(model_type))
    return _check(contract.request if contract else None, payload)


def check_response(model_type: str, payload: Any) -> list[str]:
    """What is wrong with `payload` as an answer of a model of this type; empty when nothing."""
    contract = CONTRACTS.get(_type_name(model_type))
    return _check(contract.response if contract else None, payload)


def json_schemas(model_type: str) -> dict[str, Any]:
    """The request and response JSON Schemas of a type (CUSTOM: any JSON object)."""
    contract = CONTRACTS.get(_type_name(model_type))
    if contract is None:
        anything = {"type": "object", "description": "Any JSON object: CUSTOM has no contract."}
        return {"request": anything, "response": anything}
    return {
        "request": contract.request.model_json_schema(),
        "response": contract.response.model_json_schema(),
    }


def required_request_fields(model_type: str) -> list[str]:
    contract = CONTRACTS.get(_type_name(model_type))
    if contract is None:
        return []
    return [name for name, info in contract.request.model_fields.items() if info.is_required()]


def structural_request_schema() -> dict[str, Any]:
    """The CRD schema of a probe's sample request: every type's top-level request fields.

    A structural schema cannot say "one of five shapes", so it declares the union of their
    fields (typed, so the API server refuses `chunks: "text"` and CEL can require fields per
    model type), and the serving runtimes' protocols' fields (`modelyard.api.protocols`), and
    keeps nested objects open; pydantic judges the rest when the operator reads the template.
    """
    properties: dict[str, Any] = {}
    for contract in CONTRACTS.values():
        schema = contract.request.model_json_schema()
        for name, field_schema in schema["properties"].items():
            properties.setdefault(name, _structural(field_schema))
    for name, field_schema in protocols.REQUEST_FIELDS.items():
        properties.setdefault(name, field_schema)
    return {
        "type": "object",
        "properties": dict(sorted(properties.items())),
        "x-kubernetes-preserve-unknown-fields": True,
    }


_SCALARS = ("string", "number", "integer", "boolean")


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    description = schema.get("description")
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    branch = branches[0] if len(branches) == 1 else {}
    node: dict[str, Any]
    if branch.get("type") in _SCALARS:
        node = {"type": branch["type"]}
        for key in ("minimum", "maximum"):
            if key in branch:
                node[key] = branch[key]
    elif branch.get("type") == "array" and branch.get("items", {}).get("type") in _SCALARS:
        node = {"type": "array", "items": {"type": branch["items"]["type"]}}
        if "maxItems" in branch:
            node["maxItems"] = branch["maxItems"]
    elif branch.get("type") == "array":
        node = {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }
    else:
        node = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if description:
        node["description"] = description
    return node


#: Response lists that pair one-to-one with a request list: (response field, request field).
_ONE_PER_INPUT = {
    "EMBEDDING": ("embeddings", "texts"),
    "RERANKING": ("chunk_scores", "chunks"),
    "COMPLETION": ("completions", "prompts"),
}


def check_answer(model_type: str, request: Any, answer: Any) -> list[str]:
    """What is wrong with `answer` as this type's answer to `request`: its schema, and one
    score (embedding, completion) per input — a reranker answering two scores for four chunks
    is broken even though each score is a number."""
    found = check_response(model_type, answer)
    pair = _ONE_PER_INPUT.get(_type_name(model_type))
    if found or pair is None or not isinstance(request, dict):
        return found
    given, asked = len(answer[pair[0]]), len(request.get(pair[1]) or [])
    if given != asked:
        found.append(f"{pair[0]}: {given} items for {asked} {pair[1]} (one per input, in order)")
    return found


def inference_failure(model_type: str, answer: Any) -> str | None:
    """The server's own words when it answers, in its type's schema, that it could not do
    the job (an image classifier's `status: failed`); None when it did."""
    if _type_name(model_type) != "IMAGE_CLASSIFICATION" or not isinstance(answer, dict):
        return None
    if answer.get("status") != "failed":
        return None
    words = next(
        (answer[key] for key in ("message", "error", "detail", "reason") if answer.get(key)),
        None,
    )
    return str(words)[:500] if words else "the server answered status: failed"


def unknown_labels(model_type: str, answer: Any, classes: Collection[str]) -> list[str]:
    """The labels of an image classifier's answer that are none of the model's `classes`
    (nothing is judged without classes)."""
    if _type_name(model_type) != "IMAGE_CLASSIFICATION" or not classes:
        return []
    results = answer.get("results") if isinstance(answer, dict) else None
    labels = [r.get("label") for r in results or [] if isinstance(r, dict)]
    return sorted({str(label) for label in labels if label not in classes})


def type_name(annotation: Any) -> str:
    """A field's type as the seed's tables spell it: `List[Tuple[str, List[float]]]`."""
    if get_origin(annotation) is Annotated:
        inner = get_args(annotation)[0]
        return "Message" if _is_message(inner) else type_name(inner)
    if _is_message(annotation):
        return "Message"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        kept = [a for a in args if a is not type(None)]
        inner = " | ".join(type_name(a) for a in kept)
        return f"Optional[{inner}]" if len(kept) < len(args) else inner
    if origin in (list, tuple, dict):
        name = {list: "List", tuple: "Tuple", dict: "Dict"}[origin]
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _is_message(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, UnionType) and UserMessage in get_args(annotation)


def describe(model_type: str) -> list[str]:
    """The seed's tables, as text: each schema's fields with type and description."""
    contract = CONTRACTS.get(_type_name(model_type))
    if contract is None:
        return [f"{_type_name(model_type)}: any JSON object in and out (no contract)"]
    lines = []
    for role, model in (("request", contract.request), ("response", contract.response)):
        lines.append(f"{_type_name(model_type)} {role} ({model.__name__}): {model.__doc__}")
        rows = [
            (name, type_name(info.annotation), info.description or "", info.is_required())
            for name, info in model.model_fields.items()
        ]
        width = max(len(row[0]) for row in rows)
        type_width = max(len(row[1]) for row in rows)
        for name, kind, description, required in rows:
            flag = "required" if required else "optional"
            lines.append(f"  {name:<{width}}  {kind:<{type_width}}  {flag:<8}  {description}")
    return lines
