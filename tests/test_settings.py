"""Renamed settings: the old variable is still read, with one deprecation warning, for one
release; the new one wins when both are set."""

from __future__ import annotations

import logging

import pytest

from workers import settings_base
from workers.settings import IngestSettings, KafkaSettings, TranscribeSettings, env_name

RENAMED = [(cls, field, old) for cls in (IngestSettings, TranscribeSettings)
           for field, old in cls.renamed.items()]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_base, "_warned", set())
    for *_, old in RENAMED:
        monkeypatch.delenv(old, raising=False)


@pytest.mark.parametrize(("cls", "field", "old"), RENAMED)
def test_the_old_name_is_read_and_warned_about_once(
        cls: type[KafkaSettings], field: str, old: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    new = env_name(cls, field)
    monkeypatch.delenv(new, raising=False)
    monkeypatch.setenv(old, "7")
    with caplog.at_level(logging.WARNING, logger="workers.settings_base"):
        first, second = cls(), cls()
    expected = type(cls.model_fields[field].default)("7")
    assert getattr(first, field) == getattr(second, field) == expected
    warnings = [r.getMessage() for r in caplog.records if old in r.getMessage()]
    assert warnings == [f"{old} is deprecated and will be ignored from the next release; "
                        f"set {new} instead"]


@pytest.mark.parametrize(("cls", "field", "old"), RENAMED)
def test_the_new_name_wins(cls: type[KafkaSettings], field: str, old: str,
                           monkeypatch: pytest.MonkeyPatch,
                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(old, "7")
    monkeypatch.setenv(env_name(cls, field), "9")
    with caplog.at_level(logging.WARNING, logger="workers.settings_base"):
        assert getattr(cls(), field) == type(cls.model_fields[field].default)("9")
    assert not caplog.records


def test_publish_queue_chunks_became_ingest_max_in_flight() -> None:
    assert IngestSettings.renamed["ingest_max_in_flight"] == "CALLSCRIBE_PUBLISH_QUEUE_CHUNKS"
    assert env_name(IngestSettings, "ingest_max_in_flight") == "CALLSCRIBE_INGEST_MAX_IN_FLIGHT"


def test_the_transcriber_s_names_carry_its_worker() -> None:
    assert {f: env_name(TranscribeSettings, f) for f in TranscribeSettings.renamed} == {
        "drain_seconds": "CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS",
        "group_id": "CALLSCRIBE_TRANSCRIBE_GROUP_ID",
        "web_port": "CALLSCRIBE_TRANSCRIBE_WEB_PORT"}
    assert env_name(IngestSettings, "drain_seconds") == "CALLSCRIBE_INGEST_DRAIN_SECONDS"


def test_one_old_name_still_sets_both_drain_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """CALLSCRIBE_DRAIN_SECONDS was read by ingest and the transcriber alike; it still is."""
    for cls in (IngestSettings, TranscribeSettings):
        monkeypatch.delenv(env_name(cls, "drain_seconds"), raising=False)
    monkeypatch.setenv("CALLSCRIBE_DRAIN_SECONDS", "42")
    assert IngestSettings().drain_seconds == TranscribeSettings().drain_seconds == 42
