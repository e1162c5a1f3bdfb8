"""``schemas/asyncapi.yaml`` parses, every reference in it resolves (to the JSON Schemas beside
it), it declares every liveCalls and listen message, and every message the bridge tests saw on
a real socket (``tests.bridge.wire.SEEN``; this module runs last) is declared and validates
against the payload schema the document names for it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.bridge.wire import SEEN
from tests.schema_util import FORMAT_CHECKER, SCHEMA_DIR, load, registry
from workers.bridge import livecalls as lc

DOC_PATH = SCHEMA_DIR / "asyncapi.yaml"
TS = "2026-01-15T10:30:00.123Z"
#: One message of each type, from the builders the bridge uses.
BUILT: dict[str, dict[str, Any]] = {
    "ack": lc.ack("c-1"),
    "event:start": lc.event_start("+14155550123", TS),
    "event:end": lc.event_end("The user joined the call; the screening phase has ended."),
    "event:callEnd": lc.event_call_end(TS),
    "transcript": lc.transcript("Hello.", "other", 1.5),
    "transcript:interim": lc.transcript_interim("Hel", "other", 1.5, revision=0, stable=""),
    "error": lc.error("The command failed; the call continues as before."),
    "client:joinCall": {"type": "client:joinCall", "id": "j-1"},
    "client:endCall": {"type": "client:endCall", "id": "e-1"},
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
    return loaded


def pointer(node: Any, path: str) -> Any:
    for part in filter(None, path.split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def messages(doc: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """The channel's messages by their ``name`` (the liveCalls ``type``)."""
    out = {}
    for entry in doc["channels"][channel]["messages"].values():
        message = pointer(doc, entry["$ref"].removeprefix("#"))
        out[message["name"]] = message
    return out


def payload_validator(message: dict[str, Any]) -> Draft202012Validator:
    """A validator for the JSON Schema the message's payload refers to."""
    file, _, path = message["payload"]["$ref"].partition("#")
    schema_id = load(file.removeprefix("./").removesuffix(".schema.json"))["$id"]
    return Draft202012Validator({"$ref": f"{schema_id}#{path}"}, registry=registry(),
                                format_checker=FORMAT_CHECKER)


def test_it_is_asyncapi_3_with_both_channels(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["liveCalls"]["address"] == lc.PATH
    assert doc["channels"]["listen"]["address"] == "/v1/listen/{token}"
    assert {o["action"] for o in doc["operations"].values()} == {"send", "receive"}
    assert doc["info"]["title"] and doc["info"]["version"]


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = refs(doc)
    assert len(found) > 20
    for ref in found:
        file, _, path = ref.partition("#")
        target = doc if not file else json.loads((SCHEMA_DIR / file).read_text())
        assert pointer(target, path) is not None, ref


def test_every_livecalls_message_type_is_declared(doc: dict[str, Any]) -> None:
    declared = set(messages(doc, "liveCalls"))
    server_types = set(load("livecalls-server")["properties"]["type"]["enum"])
    client_types = set(load("livecalls-client")["properties"]["type"]["enum"])
    assert declared == server_types | client_types
    assert set(messages(doc, "listen")) == {"audio"}


@pytest.mark.parametrize("kind", sorted(BUILT))
def test_built_messages_validate_against_the_declared_payload(doc: dict[str, Any],
                                                              kind: str) -> None:
    payload_validator(messages(doc, "liveCalls")[kind]).validate(BUILT[kind])


def test_messages_seen_by_the_bridge_tests_are_declared_and_valid(doc: dict[str, Any]) -> None:
    if not SEEN["server"]:
        pytest.skip("run with the rest of tests/bridge: no message was seen on a socket")
    live_calls = messages(doc, "liveCalls")
    for direction in ("server", "client"):
        for kind, message in SEEN[direction].items():
            assert kind in live_calls, f"{direction} message type {kind} is not declared"
            payload_validator(live_calls[kind]).validate(message)
    assert {"ack", "error", "event:end", "transcript", "event:callEnd"} <= set(SEEN["server"])
    assert set(SEEN["listen"]) <= set(messages(doc, "listen"))
    assert SEEN["listen"], "the listen test saw no audio"
