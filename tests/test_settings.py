"""Renamed settings: the old variable is still read, with one deprecation warning, for one
release; the new one wins when both are set."""

from __future__ import annotations

import logging

import pytest

from workers import settings as settings_module
from workers.settings import IngestSettings, KafkaSettings, env_name

RENAMED = [(cls, field, old) for cls in (IngestSettings,)
           for field, old in cls.renamed.items()]


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "_warned", set())
    for *_, old in RENAMED:
        monkeypatch.delenv(old, raising=False)


@pytest.mark.parametrize(("cls", "field", "old"), RENAMED)
def test_the_old_name_is_read_and_warned_about_once(
        cls: type[KafkaSettings], field: str, old: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    new = env_name(cls, field)
    monkeypatch.delenv(new, raising=False)
    monkeypatch.setenv(old, "7")
    with caplog.at_level(logging.WARNING, logger="workers.settings"):
        first, second = cls(), cls()
    assert str(getattr(first, field)) == str(getattr(second, field)) == "7"
    warnings = [r.getMessage() for r in caplog.records if old in r.getMessage()]
    assert warnings == [f"{old} is deprecated and will be ignored from the next release; "
                        f"set {new} instead"]


@pytest.mark.parametrize(("cls", "field", "old"), RENAMED)
def test_the_new_name_wins(cls: type[KafkaSettings], field: str, old: str,
                           monkeypatch: pytest.MonkeyPatch,
                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(old, "7")
    monkeypatch.setenv(env_name(cls, field), "9")
    with caplog.at_level(logging.WARNING, logger="workers.settings"):
        assert str(getattr(cls(), field)) == "9"
    assert not caplog.records


def test_publish_queue_chunks_became_ingest_max_in_flight() -> None:
    assert IngestSettings.renamed == {
        "ingest_max_in_flight": "CALLSCRIBE_PUBLISH_QUEUE_CHUNKS"}
    assert env_name(IngestSettings, "ingest_max_in_flight") == "CALLSCRIBE_INGEST_MAX_IN_FLIGHT"
