"""The pure live-listen layer: Bland's request checks and bodies, the partition a call's audio is
on, and the mixer (resampling, alignment by ``t_ms``, clipping, duplicates, the end)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soxr
from aiokafka.partitioner import murmur2

from workers.bridge import listen_protocol
from workers.bridge.listen_protocol import ListenMixer, ListenRefused
from workers.records import AudioChunk

KEYS = frozenset({"key-1", "key-2"})


def state_of(states: dict[str, listen_protocol.CallState]) -> Any:
    return lambda call_id: states.get(call_id, "unknown")


def check(call_id: str = "c1", authorization: str | None = "key-1", *, enabled: bool = True,
          states: dict[str, listen_protocol.CallState] | None = None) -> str:
    return listen_protocol.check_listen_request(
        call_id, authorization, api_keys=KEYS, enabled=enabled,
        call_state=state_of(states or {"c1": "live"}))


def refused(**kwargs: Any) -> ListenRefused:
    with pytest.raises(ListenRefused) as caught:
        check(**kwargs)
    return caught.value


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize("authorization", ["key-1", "Bearer key-1", "bearer key-2",
                                           "  key-2  ", "BEARER   key-1"])
def test_the_key_is_accepted_bare_or_as_bearer(authorization: str) -> None:
    assert check(authorization=authorization) == "c1"


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "key-3",
                                           "Basic key-1", "Bearer key-1 extra"])
def test_a_missing_or_wrong_key_is_401(authorization: str | None) -> None:
    error = refused(authorization=authorization)
    assert error.status == 401 and error.body["errors"][0]["error"] == "UNAUTHORIZED"


@pytest.mark.parametrize(("kwargs", "status", "code", "message"), [
    ({"call_id": ""}, 400, "MISSING_CALL_ID", "Call ID parameter is required"),
    ({"call_id": "   "}, 400, "MISSING_CALL_ID", "Call ID parameter is required"),
    ({"enabled": False}, 403, "INVALID_ORG_PREFERENCES",
     "Org preferences do not allow live listening"),
    ({"call_id": "nope"}, 404, "CALL_NOT_FOUND", "Call was either not found or not started"),
    ({"states": {"c1": "ended"}}, 400, "INVALID_CALL_STATUS", "Call is not in progress"),
])
def test_bland_error_codes(kwargs: dict[str, Any], status: int, code: str,
                           message: str) -> None:
    error = refused(**kwargs)
    assert error.status == status
    assert error.body == {"status": "error", "data": None,
                          "errors": [{"error": code, "message": message}]}


def test_checks_run_in_order_key_id_preferences_call() -> None:
    assert refused(call_id="", authorization="wrong").status == 401
    assert refused(call_id="", enabled=False).error.code == "MISSING_CALL_ID"
    assert refused(call_id="nope", enabled=False).error.code == "INVALID_ORG_PREFERENCES"


def test_bodies() -> None:
    assert listen_protocol.success("ws://h/v1/listen/t") == {
        "status": "success", "data": {"url": "ws://h/v1/listen/t"}, "errors": None}
    assert listen_protocol.failure(listen_protocol.INTERNAL_SERVER_ERROR) == {
        "status": "error", "data": None,
        "errors": [{"error": "INTERNAL_SERVER_ERROR", "message": "Internal server error"}]}
    assert listen_protocol.INTERNAL_SERVER_ERROR.status == 500


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize(("data", "expected"), [
    # Kafka's Java client test vectors for Utils.murmur2 (as signed 32-bit ints).
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
])
def test_murmur2_is_kafkas(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected & 0xFFFFFFFF


def test_partition_for_spreads_and_is_stable() -> None:
    chosen = [listen_protocol.partition_for(f"call-{n}", 8) for n in range(400)]
    assert set(chosen) == set(range(8))
    assert chosen == [listen_protocol.partition_for(f"call-{n}", 8) for n in range(400)]
    assert listen_protocol.partition_for("x", 1) == 0
    with pytest.raises(ValueError, match="partitions"):
        listen_protocol.partition_for("x", 0)


# --------------------------------------------------------------------------- mixing


def tone(freq: float, rate: int, ms: int, amplitude: int = 8000, start_ms: int = 0,
         ) -> np.ndarray[Any, Any]:
    t = (np.arange(rate * ms // 1000) + rate * start_ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2")


def chunks(samples: np.ndarray[Any, Any], *, channel: int, rate: int, channels: int = 2,
           chunk_ms: int = 100, start_ms: int = 0, first_seq: int = 0) -> list[AudioChunk]:
    step = rate * chunk_ms // 1000
    out = []
    for n, index in enumerate(range(0, len(samples), step)):
        out.append(AudioChunk(call_id="c", channel=channel, seq=first_seq + n, rate=rate,
                              role="other", t_ms=start_ms + index * 1000 // rate,
                              pcm=samples[index:index + step].tobytes(), channels=channels))
    last = AudioChunk(call_id="c", channel=channel, seq=first_seq + len(out), rate=rate,
                      role="other", t_ms=start_ms + len(samples) * 1000 // rate, pcm=b"",
                      channels=channels, last=True)
    return [*out, last]


def interleave(*streams: list[AudioChunk]) -> list[AudioChunk]:
    out: list[AudioChunk] = []
    for group in zip(*streams, strict=True):
        out += group
    return out


def mix(stream: list[AudioChunk], mixer: ListenMixer | None = None) -> np.ndarray[Any, Any]:
    mixer = mixer or ListenMixer()
    data = b"".join(mixer.push(c) for c in stream)
    assert mixer.finished
    return np.frombuffer(data, dtype="<i2")


def test_stereo_8k_becomes_16k_mono_of_the_same_duration() -> None:
    left, right = tone(300, 8000, 2000), tone(700, 8000, 2000)
    out = mix(interleave(chunks(left, channel=0, rate=8000),
                         chunks(right, channel=1, rate=8000)))
    assert len(out) == 32_000
    expected = (soxr.resample(left, 8000, 16000).astype(np.int32)
                + soxr.resample(right, 8000, 16000).astype(np.int32))
    middle = slice(1600, 30_400)  # away from the resamplers' edges
    assert np.abs(out[middle] - expected[middle]).max() <= 8  # int16 rounding of each channel


def test_16k_channels_pass_through_and_sum() -> None:
    a, b = tone(440, 16000, 500), tone(1000, 16000, 500, amplitude=3000)
    out = mix(interleave(chunks(a, channel=0, rate=16000), chunks(b, channel=1, rate=16000)))
    assert np.array_equal(out, a.astype(np.int32) + b)


def test_the_sum_is_clipped_not_wrapped() -> None:
    loud = np.full(1600, 30_000, dtype="<i2")
    out = mix(interleave(chunks(loud, channel=0, rate=16000),
                         chunks(-loud, channel=1, rate=16000)))
    assert not out.any()
    out = mix(interleave(chunks(loud, channel=0, rate=16000),
                         chunks(loud, channel=1, rate=16000)))
    assert (out == 32767).all()


def test_channels_are_aligned_by_t_ms() -> None:
    """Channel 1 starts 300 ms into the call: its audio lands 300 ms into the mix."""
    a = np.zeros(16000, dtype="<i2")
    b = np.full(16000 - 4800, 1000, dtype="<i2")
    first = chunks(a, channel=0, rate=16000)
    second = chunks(b, channel=1, rate=16000, start_ms=300)
    stream = first[:3] + interleave(first[3:], second[:len(first) - 3])
    out = mix(stream + second[len(first) - 3:])
    assert len(out) == 16000
    assert not out[:4800].any() and (out[4800:] == 1000).all()


def test_a_listener_joining_mid_call_starts_at_its_first_chunk() -> None:
    a = np.full(8000, 100, dtype="<i2")
    stream = interleave(chunks(a, channel=0, rate=16000, start_ms=5000, first_seq=50),
                        chunks(a, channel=1, rate=16000, start_ms=5000, first_seq=50))
    out = mix(stream)
    assert len(out) == 8000 and (out == 200).all()


def test_output_waits_for_the_slower_channel_within_the_lag_bound() -> None:
    a = np.full(1600, 7, dtype="<i2")
    mixer = ListenMixer(max_lag_ms=300)
    assert mixer.push(chunks(a, channel=0, rate=16000)[0]) == b""  # channel 1 not heard yet
    ahead = chunks(np.full(16000, 7, dtype="<i2"), channel=0, rate=16000)
    sent = b"".join(mixer.push(c) for c in ahead[1:5])
    assert len(sent) // 2 == 5 * 1600 - 300 * 16  # only the audio beyond the lag bound


def test_duplicates_are_ignored_and_pushes_after_the_end_too() -> None:
    a = tone(300, 8000, 500)
    stream = chunks(a, channel=0, rate=8000, channels=1)
    mixer = ListenMixer()
    once = b"".join(mixer.push(c) for c in [stream[0], stream[0], stream[1], stream[0],
                                               *stream[2:]])
    assert mixer.finished
    assert len(once) == 8000 * 2
    assert mixer.push(stream[1]) == b""


def test_mono_calls_stream_as_they_come() -> None:
    a = tone(300, 16000, 300)
    mixer = ListenMixer()
    first = mixer.push(chunks(a, channel=0, rate=16000, channels=1)[0])
    assert len(first) == 3200  # nothing to wait for
