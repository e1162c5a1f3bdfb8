#!/usr/bin/env bash
# Regenerate the committed agent-assist speech fixture.
#
#   scripts/make_assist_fixtures.sh
#
# Writes into tests/fixtures/assist/:
#   cancel_call_8k.wav   8 kHz stereo PCM16: left = caller (role "other"), right = agent
#                        (role "assistant"), alternating turns 0.7 s apart. The caller is
#                        upset about a double charge, asks to cancel, and reads a card number
#                        (4539 1488 0343 6467, Luhn-valid, varied digits so
#                        whisper does not take it for a repetition loop) as spoken digits. The agent
#                        never says the recording disclosure.
#   cancel_call.json     the script with each sentence's start/end seconds and channel
#
# Needs: bash, espeak-ng, sox/soxi, python3 (standard library only).
# Deterministic like scripts/make_fixtures.sh: the same espeak-ng/sox versions give the same
# bytes (sox runs with -D, no dither).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=tests/fixtures/assist
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=${KEEP_WORK:-$(mktemp -d)}
[[ -n ${KEEP_WORK:-} ]] || trap 'rm -rf "$WORK"' EXIT

CALLER_VOICE=en-us
AGENT_VOICE=en-us+f2
SPEED=140
RATE=16000

# The dialogue, in order: SPEAKER|TEXT. Commas in the card number make espeak pause briefly
# (shorter than the transcriber's 360 ms end-of-utterance silence), as a person grouping
# digits would.
TURNS=(
  "agent|Thank you for calling, how can I help you today?"
  "caller|I am really angry about my bill, you charged me twice."
  "agent|I am sorry about that, let me look into it."
  "caller|I want to cancel my subscription and get a refund."
  "agent|I can help with that. What is the card number on the account?"
  "caller|The card number is four five three nine, one four eight eight, zero three four three, six four six seven."
  "agent|Thank you, one moment please."
)

say() {
  espeak-ng -v "$1" -s "$SPEED" -w "$WORK/raw.wav" "$2"
  sox -R -D "$WORK/raw.wav" -b 16 -c 1 "$3" \
    silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse norm -3 rate -v "$RATE"
}

: >"$WORK/turns.tsv"
for i in "${!TURNS[@]}"; do
  speaker=${TURNS[$i]%%|*}
  text=${TURNS[$i]#*|}
  voice=$CALLER_VOICE
  [[ $speaker == agent ]] && voice=$AGENT_VOICE
  say "$voice" "$text" "$WORK/turn_$i.wav"
  printf '%s\t%s\t%s\n' "$speaker" "$WORK/turn_$i.wav" "$text" >>"$WORK/turns.tsv"
done

# Lay the turns on two 16 kHz tracks (the other track silent meanwhile), then merge and
# resample to the 8 kHz of a phone line.
export RATE WORK OUT CALLER_VOICE AGENT_VOICE SPEED
export ESPEAK_VERSION SOX_VERSION
ESPEAK_VERSION=$(espeak-ng --version | head -n1)
SOX_VERSION=$(sox --version | head -n1)
"$PYTHON" - <<'EOF'
import json
import os
import wave
from pathlib import Path

rate = int(os.environ["RATE"])
work = Path(os.environ["WORK"])
lead, gap = int(0.5 * rate), int(0.7 * rate)
tracks = {"caller": bytearray(), "agent": bytearray()}
script = []
pos = lead
for speaker in tracks:
    tracks[speaker] += b"\0\0" * lead
for line in (work / "turns.tsv").read_text().splitlines():
    speaker, path, text = line.split("\t")
    with wave.open(path) as w:
        assert w.getframerate() == rate and w.getnchannels() == 1
        pcm = w.readframes(w.getnframes())
    n = len(pcm) // 2
    for who, track in tracks.items():
        track += pcm if who == speaker else b"\0\0" * n
        track += b"\0\0" * gap
    script.append({"speaker": speaker, "channel": 0 if speaker == "caller" else 1,
                   "role": "other" if speaker == "caller" else "assistant", "text": text,
                   "start_s": round(pos / rate, 4), "end_s": round((pos + n) / rate, 4)})
    pos += n + gap
for who, track in tracks.items():
    with wave.open(str(work / f"{who}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(track))
manifest = {
    "generator": "scripts/make_assist_fixtures.sh",
    "espeak_ng": os.environ["ESPEAK_VERSION"],
    "sox": os.environ["SOX_VERSION"],
    "voices": {"caller": os.environ["CALLER_VOICE"], "agent": os.environ["AGENT_VOICE"],
               "speed_wpm": int(os.environ["SPEED"])},
    "file": "cancel_call_8k.wav",
    "card_number": "4539148803436467",
    "duration_s": round(pos / rate, 4),
    "script": script,
}
(Path(os.environ["OUT"]) / "cancel_call.json").write_text(json.dumps(manifest, indent=2) + "\n")
EOF
sox -D -M "$WORK/caller.wav" "$WORK/agent.wav" -b 16 "$OUT/cancel_call_8k.wav" rate -v 8000
ls -l "$OUT/cancel_call_8k.wav" "$OUT/cancel_call.json"
