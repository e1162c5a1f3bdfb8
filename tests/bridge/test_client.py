"""The terminal client's one-line rendering of every liveCalls message type."""

from __future__ import annotations

import json

from workers.bridge.client import render


def test_every_message_type_renders_as_one_readable_line() -> None:
    lines = {
        "start": render({"type": "event:start", "phone": "+15083084809",
                         "timestamp": "2026-11-22T08:19:40.740Z", "id": "c:start"}),
        "final": render({"type": "transcript", "msg": "My internet is not working today.",
                         "role": "other", "offset": 0.09, "id": "c:0:90"}),
        "interim": render({"type": "transcript:interim", "msg": "My internet is",
                           "role": "other", "offset": 0.09, "id": "c:0:90", "revision": 0,
                           "stable": "My"}),
        "assist": render({"type": "assist", "kind": "hint", "title": "Check for an outage first",
                          "text": "Look up the caller's area.", "transcriptId": "c:0:90"}),
        "joined": render({"type": "event:end", "msg": "The user joined the call."}),
        "error": render({"type": "error", "description": "the provider refused the transfer"}),
        "end": render({"type": "event:callEnd", "timestamp": "2026-11-22T08:19:52.522Z"}),
    }
    assert lines["start"] == "── call started  phone=+15083084809  2026-11-22T08:19:40.740Z"
    assert lines["final"] == "[   0.09s]     other: My internet is not working today."
    assert lines["interim"] == "[   0.09s]     other… My internet is"
    assert lines["assist"].strip() == "↳ hint: Check for an outage first"
    assert lines["joined"] == "── The user joined the call."
    assert lines["error"] == "── error: the provider refused the transfer"
    assert lines["end"] == "── call ended    2026-11-22T08:19:52.522Z"
    assert all("\n" not in line for line in lines.values())
    unknown = {"type": "future:thing", "x": 1}
    assert json.loads(render(unknown)) == unknown
