#!/usr/bin/env python
"""Convert a transformers OPT checkpoint into a verified zoo preset in the hub.

    python scripts/convert_weights/convert_opt.py SOURCE --name NAME [--overwrite]
        [--upload hf://org/repo]

SOURCE is hf://facebook/opt-125m (any OPT variant), pkg://package/path or a
local transformers folder. When transformers is installed the converted
model's logits are compared with `OPTForCausalLM` on sample token ids; the max
abs difference is printed and the script exits 1 (writing nothing) above
--tolerance. The preset is then written atomically to $ZOO_HOME/presets/NAME
and optionally uploaded.
"""

import sys

from zoo.cli_convert import main as run


def main(argv: list[str] | None = None) -> int:
    return run(argv, "zoo.nlp.opt.opt_convert", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
