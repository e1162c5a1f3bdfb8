"""The fault ledger (bench/ledger.py): what counts as delivered, missing, duplicated and lost."""

from __future__ import annotations

from typing import Any

from bench.ledger import (
    AudioRecord,
    CallEvidence,
    Spoken,
    audio_figures,
    call_figures,
    ledger,
    longest_silence_s,
    other_id_duplicates,
    recovery_s,
    served_keys,
)

CALL = "c1"


def final(start: int, end: int, channel: int = 0, text: str = "hello") -> dict[str, Any]:
    return {"type": "transcript", "id": f"{CALL}:{channel}:{start}", "callId": CALL,
            "channel": channel, "audioStartMs": start, "audioEndMs": end, "msg": text,
            "role": "other", "offset": start / 1000}


def interim(start: int, revision: int) -> dict[str, Any]:
    return {"type": "transcript:interim", "id": f"{CALL}:0:{start}", "callId": CALL,
            "revision": revision, "msg": "hel", "stable": "", "role": "other", "offset": 0}


START = {"type": "event:start", "id": f"{CALL}:start", "callId": CALL, "phone": "",
         "timestamp": "t"}
END = {"type": "event:callEnd", "id": f"{CALL}:callEnd", "callId": CALL, "timestamp": "t"}


def client_view(records: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    """What the bridge sends of ``records`` (no callId, no *Ms)."""
    return [(float(i), {k: v for k, v in r.items() if k != "callId" and not k.endswith("Ms")})
            for i, r in enumerate(records)]


def evidence(produced: list[dict[str, Any]], clients: list[list[dict[str, Any]]],
             spoken: list[Spoken], **kwargs: Any) -> CallEvidence:
    return CallEvidence(call_id=CALL, spoken=spoken, produced=produced, served=produced,
                        audio=kwargs.get("audio", []), sent=kwargs.get("sent", {}),
                        clients=[client_view(c) for c in clients])


def test_everything_delivered_once_is_a_clean_ledger() -> None:
    records = [START, interim(1000, 0), final(1000, 2500), final(4000, 5200), END]
    spoken = [Spoken(0, 1100, 2400, "a"), Spoken(0, 4100, 5000, "b")]
    out = call_figures(evidence(records, [records], spoken))
    assert (out.utterances, out.delivered, out.missing, out.finals) == (2, 2, 0, 2)
    assert (out.finals_missed, out.dup_same_id, out.dup_other_id, out.messages_missed) == (
        0, 0, 0, 0)
    assert out.clients_ended == 1


def test_a_final_the_client_never_got_is_missing_in_delivery() -> None:
    records = [START, final(1000, 2500), final(4000, 5200), END]
    received = [START, final(1000, 2500), END]
    spoken = [Spoken(0, 1100, 2400), Spoken(0, 4100, 5000)]
    out = call_figures(evidence(records, [received], spoken))
    assert (out.delivered, out.missing, out.missing_pipeline) == (1, 1, 0)
    assert out.finals_missed == 1 and out.messages_missed == 1
    assert out.details[0]["finals_missed"] == [f"{CALL}:0:4000"]


def test_speech_no_final_covers_is_missing_in_the_pipeline() -> None:
    records = [START, final(1000, 2500), END]
    spoken = [Spoken(0, 1100, 2400), Spoken(1, 4100, 5000), Spoken(0, 2450, 2600)]
    out = call_figures(evidence(records, [records], spoken))
    # Another channel, or a touch of 50 ms (< COVER_MS), does not cover.
    assert (out.delivered, out.missing, out.missing_pipeline) == (1, 2, 2)


def test_the_same_id_twice_is_a_duplicate_a_client_drops() -> None:
    records = [START, final(1000, 2500), final(1000, 2500), END]
    out = call_figures(evidence(records, [records], [Spoken(0, 1100, 2400)]))
    assert out.redelivered == 1 and out.dup_same_id == 1 and out.messages_duplicated == 1
    assert out.finals == 1 and out.dup_other_id == 0 and out.missing == 0


def test_overlapping_finals_under_two_ids_are_a_duplicate_under_another_id() -> None:
    a, b, c = final(1000, 2500), final(1200, 2600), final(2600, 3000)
    assert other_id_duplicates({r["id"]: r for r in (a, b, c)}) == [(a["id"], b["id"], 1300)]
    # Touching finals (a sentence close: the rest starts where the sentence ends) are not.
    rest = final(2500, 3000)
    assert other_id_duplicates({r["id"]: r for r in (a, rest)}) == []
    out = call_figures(evidence([START, a, b, c, END], [[START, a, b, c, END]], []))
    assert out.dup_other_id == 1


def test_served_keys_hold_interim_revisions_and_events() -> None:
    keys = served_keys([START, interim(1000, 0), interim(1000, 1), final(1000, 2500), END])
    assert keys == {f"{CALL}:start", f"{CALL}:0:1000#0", f"{CALL}:0:1000#1", f"{CALL}:0:1000",
                    f"{CALL}:callEnd"}


def test_audio_gaps_repeats_and_lost_samples() -> None:
    records = [AudioRecord(0, 0, 800), AudioRecord(0, 1, 800), AudioRecord(0, 1, 800),
               AudioRecord(0, 3, 400, last=True), AudioRecord(1, 0, 800)]
    lost, gaps, repeats, per_channel = audio_figures(records, {0: 2800, 1: 800})
    assert (lost, gaps, repeats) == (800, 1, 1)
    assert per_channel[0] == {"seqs": 3, "last_seq": 3, "samples": 2000, "sent": 2800}


def test_recovery_is_the_longest_wait_of_the_calls_running_at_the_fault() -> None:
    running = evidence([], [[START, END]], [])
    running.clients = [[(10.0, START), (12.5, END), (14.0, END)]]
    running.started_at, running.ended_at = 9.0, 20.0
    over = evidence([], [[START]], [])
    over.clients = [[(1.0, START)]]
    over.started_at, over.ended_at = 0.0, 5.0
    assert recovery_s(11.0, [running, over]) == 1.5
    assert recovery_s(30.0, [running, over]) is None
    assert longest_silence_s([running]) == 2.5


def test_a_scenario_sums_its_calls() -> None:
    records = [START, final(1000, 2500), END]
    one = evidence(records, [records], [Spoken(0, 1100, 2400)])
    total = ledger([one, one])
    assert (total.utterances, total.delivered, total.clients) == (2, 2, 2)
    assert len(total.details) == 2
