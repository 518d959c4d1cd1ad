#!/usr/bin/env python
"""Convert a Whisper checkpoint into a verified zoo preset in the hub.

    python scripts/convert_weights/convert_whisper.py SOURCE --name NAME [--overwrite]
        [--upload hf://org/repo]

SOURCE is hf://openai/whisper-tiny.en (any Whisper), pkg://package/path or a
local path holding a transformers Whisper folder, a CTranslate2 /
faster-whisper folder (model.bin) or an openai-whisper .pt file. The
converted model is run next to the original when its library is installed:
encoder outputs and logits against transformers' `WhisperForConditionalGeneration`
(max abs difference, tolerance 1e-4), or the encoder output against
`ctranslate2.models.Whisper` in float32 (max abs difference over the largest
abs output, tolerance 1e-4; see `compare_with_ctranslate2`). Above --tolerance
the script exits 1 and writes nothing. openai-whisper files have no reference
here and are converted unchecked. The preset is then written atomically to
$ZOO_HOME/presets/NAME and optionally uploaded.
"""

import sys

from zoo.cli_convert import main as run


def main(argv: list[str] | None = None) -> int:
    return run(argv, "zoo.audio.whisper.whisper_convert", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
