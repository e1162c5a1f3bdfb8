"""The assist worker's contract: its schemas are valid and documented, records validate and
fail where they should, settings read the documented variables, the command exists."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from tests.schema_util import load, validate
from workers.assist.messages import AssistMessage
from workers.cli import app
from workers.records import Topics
from workers.settings import AssistSettings

MESSAGE = AssistMessage(call_id="c1", transcript_id="c1:0:4500", kind="hint", title="Retention",
                        text="Offer KEEP50.", source="playbook", ref="retention-offer",
                        reason="phrase 'cancel my subscription'", priority=80, offset=4.5,
                        produced_at_ms=1_768_473_003_400)


def described(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for prop, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{where}: {prop} lacks a description"
        for key, value in node.items():
            described(value, f"{where}/{key}")
    elif isinstance(node, list):
        for item in node:
            described(item, where)


@pytest.mark.parametrize("name", ["assist", "summaries"])
def test_schemas_are_valid_and_documented(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"urn:callscribe:schema:{name}:v1"
    assert schema["title"] and schema["description"]
    described(schema, name)


def test_assist_message_codec() -> None:
    value = MESSAGE.to_json()
    validate("assist", value)
    assert value["id"] == "c1:0:4500:assist:playbook:retention-offer"
    assert value["type"] == "assist" and value["v"] == 1 and value["callId"] == "c1"


@pytest.mark.parametrize("change", [{"kind": "tip"}, {"title": ""}, {"v": 2},
                                    {"source": "oracle"}, {"transcriptId": ""}])
def test_bad_assist_records(change: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate("assist", MESSAGE.to_json() | change)


def test_topics() -> None:
    topics = Topics("acme")
    assert (topics.transcripts_redacted, topics.assist, topics.summaries) == (
        "acme.transcripts.redacted", "acme.assist", "acme.summaries")
    assert topics.all() == ("acme.audio", "acme.calls", "acme.transcripts", "acme.control",
                            "acme.interest")


def test_settings_read_their_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = AssistSettings()
    assert (defaults.group_id, defaults.web_port, defaults.redact_entities) == (
        "callscribe-assist", 8082, frozenset({"CARD", "CVV", "EXPIRY", "SSN", "EMAIL", "PHONE"}))
    for transcriber_s in ("CALLSCRIBE_TRANSCRIBE_GROUP_ID", "CALLSCRIBE_GROUP_ID"):
        monkeypatch.setenv(transcriber_s, "the-transcriber's")
    for transcriber_s in ("CALLSCRIBE_TRANSCRIBE_WEB_PORT", "CALLSCRIBE_WEB_PORT"):
        monkeypatch.setenv(transcriber_s, "8081")
    monkeypatch.setenv("CALLSCRIBE_ASSIST_WEB_PORT", "9000")
    monkeypatch.setenv("CALLSCRIBE_REDACT", "card, email")
    monkeypatch.setenv("CALLSCRIBE_PLAYBOOK", "/etc/callscribe/playbook.yaml")
    monkeypatch.setenv("CALLSCRIBE_KB_DIR", "/srv/kb")
    settings = AssistSettings()
    assert settings.group_id == "callscribe-assist" and settings.web_port == 9000
    assert settings.redact_entities == {"CARD", "EMAIL"}
    assert str(settings.playbook) == "/etc/callscribe/playbook.yaml"
    assert str(settings.kb_dir) == "/srv/kb"
    monkeypatch.setenv("CALLSCRIBE_REDACT", "card,iban")
    with pytest.raises(ValueError, match="IBAN"):
        AssistSettings()


def test_cli_has_the_assist_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["assist", "--help"])
    assert result.exit_code == 0 and "agent-assist worker" in result.output
    bad = tmp_path / "playbook.yaml"
    bad.write_text("rules: [{id: a, title: t, text: x}]\n")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # the command configures logging for its process; give the test process its own back
        result = CliRunner().invoke(app, ["assist"], env={"CALLSCRIBE_PLAYBOOK": str(bad),
                                                          "CALLSCRIBE_LOG_FORMAT": "text"})
    finally:
        root.handlers[:], root.level = handlers, level
    assert result.exit_code == 2
    assert "rules[0].match: needs at least one of phrases" in result.output
