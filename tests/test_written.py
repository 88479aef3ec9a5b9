"""What our own writes returned, kept until the watch catches up (`modelyard.kube.written`)."""

from __future__ import annotations

from typing import Any

from modelyard.kube.written import Written, caught_up, newest

KEY = ("ml", "chat")


def model(version: str | None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "chat", "namespace": "ml", **extra}
    if version is not None:
        metadata["resourceVersion"] = version
    return {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": metadata}


def test_newest_is_the_higher_resource_version_and_the_store_wins_a_doubt() -> None:
    store, ours = model("10"), model("12")
    assert newest(store, ours) is ours
    assert newest(ours, store) is ours
    assert newest(store, None) is store
    assert newest(None, ours) is ours
    unreadable = model("abc")
    assert newest(store, unreadable) is store
    assert newest(unreadable, ours) is unreadable


def test_caught_up_once_the_store_holds_our_write_or_newer() -> None:
    assert caught_up(model("12"), model("12"))
    assert caught_up(model("13"), model("12"))
    assert not caught_up(model("11"), model("12"))
    assert not caught_up(None, model("12"))
    assert not caught_up(model(None), model("12"))


def test_a_write_is_read_until_the_store_catches_up_then_goes() -> None:
    written = Written()
    written.keep(model("12", managedFields=[{"manager": "modelyard"}]))
    assert written.holds("Model", KEY)
    fresh = written.fresh("Model", KEY, model("10"))
    assert fresh is not None and fresh["metadata"]["resourceVersion"] == "12"
    assert "managedFields" not in fresh["metadata"]  # kept as the store keeps it
    assert written.fresh("Model", KEY, model("12")) == model("12")
    assert not written.holds("Model", KEY)
    assert len(written) == 0


def test_an_older_answer_never_replaces_a_newer_one() -> None:
    written = Written()
    written.keep(model("12"), None, {}, model("11"))
    assert written.fresh("Model", KEY, None) == model("12")


def test_the_echo_of_our_write_is_known_once() -> None:
    written = Written()
    written.keep(model("12"))
    assert not written.is_echo("Model", KEY, model("11"))
    assert not written.is_echo("Model", KEY, {"metadata": {}})
    assert written.is_echo("Model", KEY, model("12"))
    assert not written.is_echo("Model", KEY, model("12"))  # our copy went with the echo
    assert not written.is_echo("Model", ("ml", "other"), model("12"))


def test_forget_and_clear() -> None:
    written = Written()
    written.keep(model("12"))
    written.forget("Model", KEY)
    assert written.fresh("Model", KEY, None) is None  # a deleted object is not resurrected
    written.keep(model("12"))
    written.clear()
    assert not written.holds("Model", KEY)


def test_a_kind_is_kept_in_the_shape_its_store_keeps() -> None:
    def packed(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "packed": True}

    written = Written({"Deployment": packed})
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "chat", "resourceVersion": "3", "managedFields": []},
    }
    written.keep(deployment)
    kept = written.fresh("Deployment", ("default", "chat"), None)
    assert kept is not None and kept["packed"] is True
    assert "managedFields" in kept["metadata"]  # the shape decides, not the default
