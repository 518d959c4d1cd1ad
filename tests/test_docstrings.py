"""The runnable examples in public docstrings must run (examples marked
`# doctest: +SKIP` need network or large weights)."""

import doctest
import importlib

import pytest

from tests.once import spread

MODULES = [
    "zoo", "zoo.models", "zoo.nlp", "zoo.presets", "zoo.presets.hub", "zoo.core.tokenizer",
    "zoo.utils.progress", "zoo.nlp.bert.bert_backbone", "zoo.nlp.bert.bert_tokenizer",
    "zoo.nlp.bert.bert_preprocessor", "zoo.nlp.opt.opt_backbone", "zoo.nlp.opt.opt_causal_lm",
    "zoo.nlp.opt.opt_tokenizer", "zoo.tokenizers.byte_pair", "zoo.samplers",
    "zoo.core.backbone", "zoo.core.compiled_loop", "zoo.layout.layout_map", "zoo.utils.audio",
    "zoo.audio.whisper.whisper_audio_converter", "zoo.audio.whisper.whisper_backbone",
    "zoo.audio.whisper.whisper_tokenizer", "zoo.utils.images", "zoo.cv.box_ops", "zoo.cv.nms",
    "zoo.utils.coco_metrics", "zoo.cv.yolov8.yolov8_decode", "zoo.cv.yolov8.yolov8_backbone",
    "zoo.cv.yolov8.yolov8_detector", "zoo.cv.yolov8.yolov8_image_converter",
    "zoo.cv.yolov8.yolov8_object_detector_preprocessor", "zoo.cv.yolov8.yolov8_loss",
    "zoo.layers.attention", "zoo.layers.conv", "zoo.layers.packing", "zoo.utils.atomic",
    "zoo.layout.activations",
    "zoo.cli_args", "zoo.cli_detect", "zoo.cli_transcribe", "zoo.core.verified", "zoo.utils.image_sources", "zoo.utils.vad", "zoo.core.weights_io", "zoo.presets.checkpoint_io", "zoo.data",
    "zoo.presets.packages", "zoo.core.preset_handlers", "zoo.utils.dtypes",
    "zoo.benchmarks.suite", "zoo.benchmarks.report", "zoo.core.generation",
    "zoo.benchmarks.skeleton", "zoo.benchmarks.yolov8_reference", "zoo.core.quantization",
    "zoo.core.export",
    "zoo.cli_launch", "zoo.core.processes",
]


# Each module's examples run on one backend of `make test` (tests/once.py),
# tensorflow or torch: a few seconds there, 136 s on jax, where eager examples
# compile op by op. The calls they show are tested on every backend elsewhere.
@pytest.mark.parametrize("name", spread(MODULES, order=("tensorflow", "torch")))
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
