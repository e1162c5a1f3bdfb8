#!/usr/bin/env bash
# Regenerate the committed speech fixtures used by the whole test suite.
#
#   scripts/make_fixtures.sh                          # regenerate everything
#   KEEP_WORK=/tmp/fx scripts/make_fixtures.sh        # ... and keep the intermediate files
#
# Writes into tests/fixtures/speech/:
#   caller.wav           16 kHz mono PCM16: the caller's sentences, 0.8 s apart
#   agent.wav            16 kHz mono PCM16: the agent's sentences, 0.8 s apart
#   call_stereo_8k.wav   8 kHz stereo PCM16: left = caller, right = agent, alternating
#                        turns (caller 1, agent 1, caller 2, ...) 0.7 s apart
#   call_mono_16k.wav    16 kHz mono PCM16: the caller only, after 1 s of silence
#   silence_noise_8k.wav 8 kHz mono PCM16: silence, 4 s of low line hiss, silence (6 s)
#   manifest.json        per file and channel: reference sentences with start/end seconds
# and copies call_stereo_8k.wav to workers/samples/demo_call.wav (the bundled demo call).
#
# Needs: bash, espeak-ng, sox/soxi, python3 (standard library only, for the JSON manifest).
# Deterministic: espeak-ng renders the same samples for the same text, voice and speed;
# sox runs with -R (fixed random seed, for the noise) and -D (no dither), so reruns give
# byte-identical files on the same espeak-ng/sox versions (recorded in the manifest).
#
# Timing: every sentence is rendered on its own, trimmed to its first and last audible
# sample and measured with `soxi -s`; silences are laid down in exact sample counts, so the
# start/end seconds in the manifest are exact at 16 kHz (to within a sample at 8 kHz) and
# mark where the audible speech of each sentence begins and ends.
#
# The sentences and voices were chosen so that faster-whisper tiny.en (beam 1, int8)
# transcribes every sentence of the 8 kHz call (upsampled to 16 kHz) with WER <= 10 %;
# tests/transcribe/test_fixtures_transcribe.py checks it. Avoid numbers and names.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=tests/fixtures/speech
SAMPLES=workers/samples
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$SAMPLES"
WORK=${KEEP_WORK:-$(mktemp -d)}
[[ -n ${KEEP_WORK:-} ]] || trap 'rm -rf "$WORK"' EXIT

# ---- the dialogue ---------------------------------------------------------------------
# Two espeak-ng voices: a British male caller and an American female agent.
CALLER_VOICE=en-gb-x-rp+m1
AGENT_VOICE=en-us+f3
SPEED=140 # words per minute; slower than espeak's 175 default, clearer after 8 kHz
# Two sentences each keeps every committed wav together (demo_call.wav included) under
# 1.5 MB; the arrays may hold more, as long as both hold the same number (turns alternate).
CALLER=(
  "My internet is not working today."
  "I tried to turn it off and on."
)
AGENT=(
  "Oh no, I am sorry to hear that."
  "Let me look at your account for you."
)

RATE=16000
LEAD=4800   # 0.3 s of silence before the first and after the last sentence (16 kHz samples)
PAUSE=12800 # 0.8 s between one speaker's sentences in caller.wav / agent.wav
GAP=11200   # 0.7 s between turns in the stereo call
MONO_LEAD=16000 # 1.0 s before the caller starts in call_mono_16k.wav

# say VOICE TEXT OUT: render one sentence to 16 kHz mono PCM16, trimmed and normalised.
#   espeak-ng -w        writes a 22.05 kHz mono wav
#   silence 1 0.01 0.1% drops leading samples until 10 ms stay above 0.1 % of full scale;
#   reverse ... reverse does the same at the end (sox trims only leading silence)
#   norm -3             peak at -3 dBFS, so both voices sit at the same level
#   rate -v 16000       very-high-quality resampling to 16 kHz
say() {
  espeak-ng -v "$1" -s "$SPEED" -w "$WORK/raw.wav" "$2"
  sox -R -D "$WORK/raw.wav" -b 16 -c 1 "$3" \
    silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse norm -3 rate -v "$RATE"
}

# silence N OUT: exactly N samples of digital silence at 16 kHz. (Format options come
# before the file they describe: here the null input -n, so nothing is resampled.)
silence() {
  sox -D -r "$RATE" -c 1 -n -b 16 "$2" trim 0 "${1}s"
}

nsamples() { soxi -s "$1"; }

# Render every sentence once: $WORK/caller_<i>.wav, $WORK/agent_<i>.wav.
for i in "${!CALLER[@]}"; do say "$CALLER_VOICE" "${CALLER[$i]}" "$WORK/caller_$i.wav"; done
for i in "${!AGENT[@]}"; do say "$AGENT_VOICE" "${AGENT[$i]}" "$WORK/agent_$i.wav"; done

# Segment table for the manifest: file, channel, speaker, start, end (16 kHz samples), text.
SEGMENTS="$WORK/segments.tsv"
: >"$SEGMENTS"

# speaker_track FILE SPEAKER LEAD_SAMPLES: one speaker's sentences PAUSE apart, LEAD after.
speaker_track() {
  local file=$1 speaker=$2 lead=$3 pos parts=() i n
  local -n texts=${speaker^^}
  silence "$lead" "$WORK/lead_$file"
  silence "$PAUSE" "$WORK/pause.wav"
  silence "$LEAD" "$WORK/tail.wav"
  pos=$lead
  parts+=("$WORK/lead_$file")
  for i in "${!texts[@]}"; do
    ((i > 0)) && parts+=("$WORK/pause.wav") && pos=$((pos + PAUSE))
    n=$(nsamples "$WORK/${speaker}_$i.wav")
    printf '%s\t0\t%s\t%d\t%d\t%s\n' "$file" "$speaker" "$pos" "$((pos + n))" "${texts[$i]}" \
      >>"$SEGMENTS"
    parts+=("$WORK/${speaker}_$i.wav")
    pos=$((pos + n))
  done
  parts+=("$WORK/tail.wav")
  sox -D "${parts[@]}" "$OUT/$file" # sox concatenates its inputs in order
}

speaker_track caller.wav caller "$LEAD"
speaker_track agent.wav agent "$LEAD"
speaker_track call_mono_16k.wav caller "$MONO_LEAD"

# ---- the stereo call: turns alternate, each channel silent while the other speaks ------
silence "$LEAD" "$WORK/lead.wav"
silence "$GAP" "$WORK/gap.wav"
left=("$WORK/lead.wav")
right=("$WORK/lead.wav")
pos=$LEAD
for i in "${!CALLER[@]}"; do
  for speaker in caller agent; do
    seg="$WORK/${speaker}_$i.wav"
    n=$(nsamples "$seg")
    if [[ $speaker == caller ]]; then
      ch=0; text=${CALLER[$i]}; left+=("$seg"); silence "$n" "$WORK/hole_${speaker}_$i.wav"
      right+=("$WORK/hole_${speaker}_$i.wav")
    else
      ch=1; text=${AGENT[$i]}; right+=("$seg"); silence "$n" "$WORK/hole_${speaker}_$i.wav"
      left+=("$WORK/hole_${speaker}_$i.wav")
    fi
    printf '%s\t%d\t%s\t%d\t%d\t%s\n' call_stereo_8k.wav "$ch" "$speaker" "$pos" "$((pos + n))" \
      "$text" >>"$SEGMENTS"
    pos=$((pos + n))
    # a gap after every turn but the last; the last turn gets the tail instead
    if ((i < ${#CALLER[@]} - 1)) || [[ $speaker == caller ]]; then
      left+=("$WORK/gap.wav"); right+=("$WORK/gap.wav"); pos=$((pos + GAP))
    fi
  done
done
left+=("$WORK/lead.wav")
right+=("$WORK/lead.wav")
sox -D "${left[@]}" "$WORK/left.wav"
sox -D "${right[@]}" "$WORK/right.wav"
# -M merges the two mono files into the channels of one (left, right);
# rate -v 8000 resamples to the 8 kHz of a phone line (band-limits to 4 kHz).
sox -D -M "$WORK/left.wav" "$WORK/right.wav" -b 16 "$OUT/call_stereo_8k.wav" rate -v 8000
cp "$OUT/call_stereo_8k.wav" "$SAMPLES/demo_call.wav"

# ---- silence and line hiss: no speech, the VAD must stay quiet ---------------------------
# 1 s silence, 4 s white noise (gain -12 first, so the filter cannot clip) band-limited to the 300-3400 Hz phone band (sinc) with its
# peak at -30 dBFS (gain -n; about -43 dBFS RMS), 1 s silence. -R fixes the noise seed.
sox -R -D -r 8000 -c 1 -n -b 16 "$WORK/hiss.wav" synth 4 whitenoise gain -12 sinc 300-3400 gain -n -30
sox -D -r 8000 -c 1 -n -b 16 "$WORK/sil1.wav" trim 0 8000s
sox -D "$WORK/sil1.wav" "$WORK/hiss.wav" "$WORK/sil1.wav" "$OUT/silence_noise_8k.wav"

# ---- manifest.json ----------------------------------------------------------------------
ESPEAK_VERSION=$(espeak-ng --version | head -n1)
SOX_VERSION=$(sox --version | head -n1)
export ESPEAK_VERSION SOX_VERSION CALLER_VOICE AGENT_VOICE SPEED RATE OUT SEGMENTS
"$PYTHON" - <<'EOF'
"""Turn segments.tsv (sample positions at 16 kHz) into tests/fixtures/speech/manifest.json."""

import json
import os
import wave
from pathlib import Path

out = Path(os.environ["OUT"])
rate = int(os.environ["RATE"])
rows = [line.split("\t") for line in Path(os.environ["SEGMENTS"]).read_text().splitlines()]

files: dict[str, dict[str, object]] = {}
for name in ["caller.wav", "agent.wav", "call_stereo_8k.wav", "call_mono_16k.wav",
             "silence_noise_8k.wav"]:
    with wave.open(str(out / name)) as w:
        files[name] = {
            "sample_rate": w.getframerate(),
            "channels": w.getnchannels(),
            "sample_width": w.getsampwidth(),
            "frames": w.getnframes(),
            "duration_s": round(w.getnframes() / w.getframerate(), 4),
            "tracks": [{"channel": c, "speaker": None, "sentences": []}
                       for c in range(w.getnchannels())],
        }
for name, channel, speaker, start, end, text in rows:
    track = files[name]["tracks"][int(channel)]  # type: ignore[index]  # dict[str, object] values
    track["speaker"] = speaker
    track["sentences"].append(
        {"text": text, "start_s": round(int(start) / rate, 4), "end_s": round(int(end) / rate, 4)}
    )
files["silence_noise_8k.wav"]["noise"] = {
    "start_s": 1.0, "end_s": 5.0, "band_hz": [300, 3400], "peak_dbfs": -30
}
script = [
    {"speaker": s["speaker"], "text": s["text"]}
    for s in sorted(
        ({"speaker": r[2], "text": r[5], "start": int(r[3])} for r in rows
         if r[0] == "call_stereo_8k.wav"),
        key=lambda s: s["start"],
    )
]
manifest = {
    "generator": "scripts/make_fixtures.sh",
    "espeak_ng": os.environ["ESPEAK_VERSION"],
    "sox": os.environ["SOX_VERSION"],
    "voices": {
        "caller": {"espeak_voice": os.environ["CALLER_VOICE"], "speed_wpm": int(os.environ["SPEED"])},
        "agent": {"espeak_voice": os.environ["AGENT_VOICE"], "speed_wpm": int(os.environ["SPEED"])},
    },
    "notes": "start_s/end_s: first and last audible sample of each sentence, in seconds "
             "from the start of the file. demo_call.wav in workers/samples is a copy of "
             "call_stereo_8k.wav.",
    "script": script,
    "files": files,
}
(out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
EOF

ls -l "$OUT" "$SAMPLES/demo_call.wav"
