"""The ultralytics .pt converter: what it reads, and the clear errors for what it does not.

Checkpoints that are not YOLOv8 detection models are written with torch.save
from stand-in classes registered under ultralytics' module names (ultralytics
itself cannot be imported here); the converter only reads them as data.
"""

import sys
import types

import numpy as np
import pytest

from zoo.core.errors import ConversionError, ZooError
from zoo.cv.yolov8.yolov8_convert import convert_ultralytics, read_ultralytics_checkpoint
from zoo.models import YOLOV8Detector

torch = pytest.importorskip("torch")


@pytest.fixture
def fake_ultralytics(monkeypatch):
    """Stand-in `ultralytics.nn.tasks` / `ultralytics.nn.modules.block` modules."""
    modules = {}
    for name in ("ultralytics", "ultralytics.nn", "ultralytics.nn.tasks",
                 "ultralytics.nn.modules", "ultralytics.nn.modules.block"):
        modules[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, modules[name])

    def define(module, name):
        cls = type(name, (torch.nn.Module,), {"__module__": module})
        setattr(modules[module], name, cls)
        return cls

    return define


def test_segmentation_checkpoint_is_refused(tmp_path, fake_ultralytics):
    model = fake_ultralytics("ultralytics.nn.tasks", "SegmentationModel")()
    model.conv = torch.nn.Conv2d(3, 4, 1)
    path = tmp_path / "yolov8n-seg.pt"
    torch.save({"model": model, "version": "8.3.0"}, path)
    with pytest.raises(ConversionError, match="SegmentationModel.*not a YOLOv8 DetectionModel"):
        read_ultralytics_checkpoint(path)


def test_other_yolo_layout_is_refused(tmp_path, fake_ultralytics):
    detection = fake_ultralytics("ultralytics.nn.tasks", "DetectionModel")
    c3k2 = fake_ultralytics("ultralytics.nn.modules.block", "C3k2")
    model = detection()
    model.model = torch.nn.Sequential(c3k2(), c3k2())
    path = tmp_path / "yolo11n.pt"
    torch.save({"model": model}, path)
    with pytest.raises(ConversionError, match="not YOLOv8's layout"):
        read_ultralytics_checkpoint(path)


def test_plain_state_dict_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ConversionError, match="not an ultralytics model checkpoint"):
        read_ultralytics_checkpoint(path)


def test_arbitrary_code_is_never_loaded(tmp_path, fake_ultralytics):
    evil = type("Evil", (), {"__reduce__": lambda self: (print, ("pwned",)),
                             "__module__": __name__})
    path = tmp_path / "evil.pt"
    torch.save({"model": evil()}, path)
    with pytest.raises(ConversionError, match="builtins.print"):
        read_ultralytics_checkpoint(path)


def test_corrupt_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ConversionError, match="corrupt|truncated"):
        read_ultralytics_checkpoint(path)
    with pytest.raises(ZooError):
        YOLOV8Detector.from_preset(path)


def test_failed_conversion_writes_nothing(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    out = tmp_path / "preset"
    with pytest.raises(ConversionError):
        convert_ultralytics(path, out, str(path))
    assert not out.exists()
