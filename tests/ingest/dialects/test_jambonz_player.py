"""jambonz outbound state (pure): the playAudio queue and playDone, marks in flight,
killAudio, clearMarks, disconnect and binary streaming mode (protocols.md §1.5)."""

from __future__ import annotations

import json

import pytest

from workers.ingest.dialects.events import CallStart, MarkEvent, PlayDone
from workers.ingest.dialects.jambonz import MAX_MARKS, MAX_PLAY_QUEUE, JambonzPlayer
from workers.ingest.errors import ControlUnsupported, PlaybackLimit


def start(**metadata: object) -> CallStart:
    return CallStart("c", "", "", "", 8000, "mono", 1, ("other",), dict(metadata))


def test_queue_of_ten_with_play_done_tracking() -> None:
    player = JambonzPlayer.for_start(start())
    frames = [player.play(bytes(320), sample_rate=8000, id=f"p{i}") for i in range(MAX_PLAY_QUEUE)]
    message = json.loads(frames[0])
    assert message["type"] == "playAudio"
    assert message["data"]["sampleRate"] == 8000 and message["data"]["queuePlay"] is True
    with pytest.raises(PlaybackLimit):
        player.play(bytes(320), sample_rate=8000, id="p10")
    player.on_reply(PlayDone("p0", {}))
    player.on_reply(PlayDone(None, {}))  # no id echoed: the oldest is done
    assert player.queued[:2] == ("p2", "p3")
    player.play(bytes(320), sample_rate=8000, id="p10")
    # queue=False: jambonz flushes its queue and plays this now.
    player.play(bytes(320), sample_rate=8000, id="now", queue=False)
    assert player.queued == ("now",)
    assert json.loads(player.kill()) == {"type": "killAudio"}
    assert player.queued == ()


def test_thirty_marks_in_flight() -> None:
    player = JambonzPlayer()
    for i in range(MAX_MARKS):
        assert json.loads(player.mark(f"m{i}")) == {"type": "mark", "data": {"name": f"m{i}"}}
    with pytest.raises(PlaybackLimit):
        player.mark("one too many")
    player.on_reply(MarkEvent("m0", "playout"))
    player.on_reply(MarkEvent("m1", "cleared"))
    player.kill()  # marks stay tracked: jambonz reports them cleared
    assert len(player.marks) == MAX_MARKS - 2
    player.mark("m30")
    assert json.loads(player.clear_marks()) == {"type": "clearMarks"}
    assert player.marks == ()
    assert json.loads(player.disconnect()) == {"type": "disconnect"}


def test_streaming_mode_sends_binary_and_refuses_json_play() -> None:
    player = JambonzPlayer.for_start(start(bidirectionalAudio={
        "enabled": True, "streaming": True, "sampleRate": 16000}))
    assert player.streaming and player.streaming_rate == 16000
    assert player.stream(b"\x01\x02\x03") == b"\x01\x02"
    assert player.stream(b"\x04") == b"\x03\x04"
    with pytest.raises(ControlUnsupported):
        player.play(bytes(2), sample_rate=16000)
    with pytest.raises(ControlUnsupported):
        JambonzPlayer().stream(bytes(2))


def test_config_from_metadata_is_lenient() -> None:
    assert not JambonzPlayer.for_start(start(bidirectionalAudio={"enabled": False})).bidirectional
    no_rate = JambonzPlayer.for_start(start(bidirectionalAudio={"streaming": True}))
    assert not no_rate.streaming  # jambonz needs the rate to stream
    assert JambonzPlayer.for_start(start(bidirectionalAudio="yes")).bidirectional
    with pytest.raises(ControlUnsupported):
        JambonzPlayer(bidirectional=False).mark("m")
    with pytest.raises(ValueError):
        JambonzPlayer(streaming=True)
