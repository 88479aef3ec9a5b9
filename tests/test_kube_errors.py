"""How a failed API call is classified (`modelyard.kube.errors`): the reason and message of a
Kubernetes Status, a body that is not one, Retry-After, and whether retrying can help."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict

from modelyard.kube.errors import ApiError, NotLeading, api_error, json_body


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }
    ).encode()


def test_a_status_body_gives_its_reason_and_message() -> None:
    body = status(404, "NotFound", 'models.modelyard.dev "a" not found')
    error = api_error(404, "Not Found", body, {})
    assert (error.status, error.reason, error.message) == (
        404,
        "NotFound",
        'models.modelyard.dev "a" not found',
    )
    assert str(error) == '404 NotFound: models.modelyard.dev "a" not found'


def test_a_status_as_text_is_read_as_bytes_are() -> None:
    body = status(409, "Conflict", "the object has been modified")
    assert api_error(409, "Conflict", body.decode(), {}).message == "the object has been modified"


def test_a_status_without_a_reason_keeps_the_http_reason() -> None:
    error = api_error(422, "Unprocessable Entity", b'{"message": "spec.replicas: Invalid"}', {})
    assert (error.reason, error.message) == ("Unprocessable Entity", "spec.replicas: Invalid")


def test_an_empty_body_keeps_the_http_reason() -> None:
    error = api_error(503, "Service Unavailable", b"", {})
    assert (error.status, error.reason, error.message) == (503, "Service Unavailable", "")


def test_a_body_that_is_not_json_is_the_message_cut_short() -> None:
    page = b"<html><body>502 Bad Gateway</body></html>" + b" " * 1000
    error = api_error(502, "Bad Gateway", page, {})
    assert error.reason == "Bad Gateway"
    assert error.message.startswith("<html><body>502 Bad Gateway")
    assert len(error.message) == 500


def test_json_that_is_not_an_object_is_shown_as_it_is() -> None:
    assert api_error(500, "", b'["not", "a", "status"]', {}).message == '["not", "a", "status"]'


def test_a_body_that_is_not_utf8_does_not_fail_the_classification() -> None:
    error = api_error(500, "Internal Server Error", b"\xff\xfe broken", {})
    assert error.status == 500 and "broken" in error.message


def test_no_status_at_all_is_status_0() -> None:
    error = api_error(None, None, None, None)
    assert (error.status, error.reason, error.message, error.retry_after) == (0, "", "", None)


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),  # HTTP/2 header names are lowercase
        (CIMultiDict({"RETRY-AFTER": "7"}), 7.0),  # aiohttp's headers
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # a date is not read
        ({"Retry-After": ""}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: object, retry_after: float | None) -> None:
    body = status(429, "TooManyRequests", "slow down")
    assert api_error(429, "Too Many Requests", body, headers).retry_after == retry_after


@pytest.mark.parametrize("code", [0, 408, 409, 429, 500, 502, 503, 504])
def test_retrying_can_help(code: int) -> None:
    assert ApiError(code, "", "").temporary


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410, 422, 501])
def test_retrying_cannot_help(code: int) -> None:
    assert not ApiError(code, "", "").temporary


def test_only_404_is_not_found() -> None:
    assert ApiError(404, "NotFound", "").not_found
    assert not ApiError(410, "Gone", "").not_found
    assert not ApiError(0, "Unreachable", "").not_found


def test_not_leading_is_not_an_api_error() -> None:
    """A reconciler catching ApiError must not report a standby's refusal as the server's."""
    assert not issubclass(NotLeading, ApiError)


def test_a_json_object_is_the_answer() -> None:
    assert json_body(b'{"kind": "Model"}', 200) == {"kind": "Model"}


def test_an_empty_answer_is_an_empty_object() -> None:
    assert json_body(b"", 200) == {}


@pytest.mark.parametrize("payload", [b"<html>proxy</html>", b'{"kind": "Mod', b"[1, 2]", b'"x"'])
def test_an_answer_that_is_not_a_json_object_is_temporary(payload: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        json_body(payload, 200)
    assert raised.value.temporary
    assert raised.value.reason == "InvalidResponse"
    assert raised.value.message.startswith("200 with a body that is not JSON")
