"""YOLOv8: anchor-free object detection (ultralytics, 2023)."""

import zoo.presets  # noqa: F401  (installs the preset resolver zoo.core's from_preset uses)

from zoo.cv.yolov8.yolov8_backbone import YOLOV8Backbone
from zoo.cv.yolov8.yolov8_detector import YOLOV8Detector
from zoo.cv.yolov8.yolov8_image_converter import YOLOV8ImageConverter
from zoo.cv.yolov8.yolov8_object_detector_preprocessor import YOLOV8ObjectDetectorPreprocessor

__all__ = ["YOLOV8Backbone", "YOLOV8Detector", "YOLOV8ImageConverter",
           "YOLOV8ObjectDetectorPreprocessor"]
