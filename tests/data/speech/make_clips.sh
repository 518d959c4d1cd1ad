#!/usr/bin/env bash
# Regenerates the speech fixtures in this folder (see README.md).
#
# Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox) and a Python
# with numpy and soundfile (for the .ogg and .mp3 copies). CI never runs this
# script: it only reads the committed files.
#
#   bash tests/data/speech/make_clips.sh            # uses python3 from PATH
#   PYTHON=.venv/bin/python bash tests/data/speech/make_clips.sh
#
# espeak-ng (voice en-us, default speed) writes 22050 Hz mono 16-bit wav;
# sox converts to 16 kHz. `sox -D` turns dithering off so a rerun gives the
# same samples.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
VOICE="en-us"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# say TEXT OUT.wav: TEXT spoken, 16 kHz mono 16-bit PCM.
say() {
    espeak-ng -v "$VOICE" -w "$WORK/raw.wav" "$1"
    sox -D "$WORK/raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$2"
}

# -- four short clips, 16 kHz mono 16-bit wav ---------------------------------
say "The quick brown fox jumps over the lazy dog." "$HERE/fox.wav"
say "It is sunny today, and the temperature is 25 degrees." "$HERE/weather.wav"
say "Could you please open the window? It is very warm in here." "$HERE/question.wav"
say "My name is Alice Johnson, and I live at 42 Green Street." "$HERE/name.wav"

# -- name.wav in other containers and layouts ----------------------------------
# 44.1 kHz stereo int16; the right channel is 0.7 times the left.
sox -D "$HERE/name.wav" -r 44100 -b 16 -e signed-integer "$HERE/name_stereo_44k.wav" \
    remix 1v1.0 1v0.7
# Ogg Vorbis and MP3 at 16 kHz mono, written by libsndfile.
"$PYTHON" - "$HERE" <<'EOF'
import sys
from pathlib import Path

import soundfile

here = Path(sys.argv[1])
data, rate = soundfile.read(here / "name.wav", dtype="int16")
soundfile.write(here / "name.ogg", data, rate, format="OGG", subtype="VORBIS")
soundfile.write(here / "name.mp3", data, rate, format="MP3")
EOF

# -- one long clip (about 70 s): sentences joined by 0.6 s of silence, FLAC ---
SENTENCES=(
    "This is a short story about a small town by the sea."
    "Every morning, the fishermen left the harbor before the sun came up."
    "They took their boats far out into the cold, gray water."
    "At noon, most of them came back with their nets full of fish."
    "The market in the town square opened at one o'clock."
    "People came from other villages to buy fresh bread and cheese."
    "Children played by the fountain while their parents talked."
    "An old man sold apples and pears from a wooden cart."
    "In the afternoon, the wind grew stronger and the clouds moved in."
    "The owners of the shops closed their windows and brought their chairs inside."
    "When the rain began, the streets were almost empty."
    "Only a few cats were still looking for shelter under the roofs."
    "In the evening, the storm passed and the sky became clear again."
    "The families sat down together for a warm dinner."
    "At nine in the evening, the lighthouse was turned on."
    "After dinner, they walked along the beach and watched the stars."
    "The next day was Sunday, and the boats stayed in the harbor."
    "Then everyone went home to sleep, ready for another day."
)
parts=()
for i in "${!SENTENCES[@]}"; do
    say "${SENTENCES[$i]}" "$WORK/part$i.wav"
    sox "$WORK/part$i.wav" "$WORK/padded$i.wav" pad 0 0.6
    parts+=("$WORK/padded$i.wav")
done
sox "${parts[@]}" -C 8 "$HERE/story.flac"

# -- long-form fallback recordings (tests/audio/whisper/test_whisper_fallback.py)
# repeat_long.flac: one long sentence spoken three times ("Part 1. ..." to
# "Part 3. ..."), 0.6 s apart: the first 30 s window decodes as text too
# repetitive for the compression-ratio rule, and its no-speech probability is
# above 0.6 (the case of issue 19).
# repeat_short.flac: a short sentence four times, one window whose text is
# just repetitive enough to fail the rule.
LONG="The committee will meet again on Thursday morning to review the budget for the new library and the park, and everyone who lives in the town is welcome to come and share their ideas."
SHORT="Please close the window."
# repeat TEXT N OUT: "Part i. TEXT" for i = 1..N, each followed by 0.6 s of silence.
repeat() {
    local pieces=()
    for i in $(seq 1 "$2"); do
        say "Part $i. $1" "$WORK/rep$i.wav"
        sox "$WORK/rep$i.wav" "$WORK/reppad$i.wav" pad 0 0.6
        pieces+=("$WORK/reppad$i.wav")
    done
    sox "${pieces[@]}" -C 8 "$3"
}
repeat "$LONG" 3 "$HERE/repeat_long.flac"
repeat "$SHORT" 4 "$HERE/repeat_short.flac"
# hum_then_speech.flac: 36 s of a quiet 50 Hz hum (no speech: its first window
# is dropped by the no-speech rule), then two sentences.
sox -D -n -r 16000 -c 1 -b 16 -e signed-integer "$WORK/hum.wav" synth 36 sine 50 vol 0.02
say "The meeting starts at nine in the morning." "$WORK/meeting.wav"
say "Please bring your notes and a pen." "$WORK/notes.wav"
sox "$WORK/hum.wav" "$WORK/meeting.wav" "$WORK/notes.wav" -C 8 "$HERE/hum_then_speech.flac"

"$PYTHON" - "$HERE" <<'EOF'
import sys
from pathlib import Path

import soundfile

for path in sorted(Path(sys.argv[1]).glob("*.*")):
    if path.suffix in (".wav", ".flac", ".ogg", ".mp3"):
        info = soundfile.info(path)
        print(f"{path.name:22s} {info.duration:6.2f} s  {info.samplerate} Hz  "
              f"{info.channels} ch  {info.subtype}")
EOF
