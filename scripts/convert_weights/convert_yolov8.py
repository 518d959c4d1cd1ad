#!/usr/bin/env python
"""Convert an ultralytics YOLOv8 detection checkpoint into a verified zoo preset in the hub.

    python scripts/convert_weights/convert_yolov8.py SOURCE --name NAME [--overwrite]
        [--upload hf://org/repo]

SOURCE is an ultralytics `.pt` (yolov8n.pt ... yolov8x.pt or a trained
best.pt): hf://org/repo/file.pt, pkg://package/path/file.pt or a local path.
It is read by zoo's restricted unpickler (ultralytics is not imported and no
code from the file runs). When an ONNX export of the same model lies next to
it (`<stem>.onnx`, `<stem>_fp16.onnx` or the folder's only .onnx), the
converted model's decoded outputs (boxes in pixels and class probabilities)
are compared with onnxruntime's (max abs difference, tolerance 1e-2; see
`compare_with_onnxruntime`); above --tolerance the script exits 1 and writes
nothing. The preset is then written atomically to $ZOO_HOME/presets/NAME and
optionally uploaded.
"""

import sys

from zoo.cli_convert import main as run


def main(argv: list[str] | None = None) -> int:
    return run(argv, "zoo.cv.yolov8.yolov8_convert", __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
