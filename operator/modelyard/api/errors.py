"""Validation errors as users should read them."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError) -> str:
    """One clause per problem, with the camelCase path users wrote, no pydantic noise."""
    lines = []
    for item in error.errors(include_url=False):
        location = ".".join(
            str(part) for part in item["loc"] if not str(part).startswith("function-")
        )
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)
