#!/usr/bin/env python
"""Convert a Stable Diffusion v1 checkpoint into a verified zoo preset in the hub.

    python scripts/convert_weights/convert_stable_diffusion.py SOURCE --name NAME [--overwrite]
        [--upload hf://org/repo]

SOURCE is a diffusers folder (hf://stable-diffusion-v1-5/stable-diffusion-v1-5,
hf://CompVis/stable-diffusion-v1-4 or a local folder with model_index.json)
or a single-file original checkpoint (`.safetensors`, or `.ckpt` read by
zoo's restricted unpickler; hf://org/repo/file or a local path). A diffusers
folder is checked against diffusers and transformers when they are
installed: text encoder hidden states, UNet noise prediction and VAE
encoder/decoder outputs on fixed inputs (max abs difference, tolerance
1e-3; see `compare_with_diffusers`); above --tolerance the script exits 1
and writes nothing. The preset is then written atomically to
$ZOO_HOME/presets/NAME and optionally uploaded.
"""

import sys

from zoo.cli_convert import main as run


def main(argv: list[str] | None = None) -> int:
    return run(argv, "zoo.diffusion.stable_diffusion.stable_diffusion_convert", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
