"""The family table: the one place that lists zoo's model families.

Adding a family is one folder (`zoo/<area>/<family>/`) plus one entry here.
Everything that needs to know the families reads this table and imports a
family's modules by the names it gives, only when it needs them:

- the catalog (`zoo.presets.catalog`) reads each family's `presets` module,
- format detection (`zoo.presets.formats`) finds the converter of a
  checkpoint by its transformers `model_type`, CTranslate2 spec, single-file
  kind or diffusers layout, and the converter module's `SOURCE_FORMATS` says
  which function converts it and how the result is checked,
- `zoo convert` and `scripts/convert_weights/` (`zoo.cli_convert`) read those
  `SOURCE_FORMATS`,
- `zoo benchmark` (`zoo.benchmarks.suite`) runs each family's `benchmark`.

This module imports nothing of zoo: it is data, below every layer.

Example:

    >>> from zoo.families import FAMILIES, family_named
    >>> [f.name for f in FAMILIES]
    ['bert', 'opt', 'whisper', 'yolov8', 'stable_diffusion']
    >>> family_named("whisper").converter
    'zoo.audio.whisper.whisper_convert'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One family: where its parts live, and which checkpoints it converts."""

    #: the name users see (`zoo presets --family`, `zoo benchmark --family`)
    name: str
    #: its package (`zoo.nlp.bert`); `zoo.models` re-exports its `__all__`
    package: str
    #: the catalog data module (a `PRESETS` dict)
    presets: str
    #: the converter module (a `SOURCE_FORMATS` dict: checkpoint kind -> SourceFormat)
    converter: str
    #: the benchmark module (`zoo.benchmarks.bench_<family>`: the workload and its peer)
    benchmark: str
    #: transformers `model_type`s it converts
    transformers_model_types: tuple[str, ...] = ()
    #: CTranslate2 spec names (`model.bin`'s header) it converts
    ctranslate2_specs: tuple[str, ...] = ()
    #: single-file checkpoint kinds (`zoo.presets.formats.torch_file_kind`) it converts,
    #: each with the bytes that identify it in a safetensors header or a torch
    #: pickle (None: a `.pt`/`.ckpt` file no family's bytes identify)
    torch_file_kinds: tuple[tuple[str, bytes | None], ...] = ()
    #: whether it converts diffusers folders (`model_index.json`)
    diffusers: bool = False
    #: per network of a diffusers pipeline it downloads: (folder, weight file stems)
    diffusers_networks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: what it converts besides transformers folders, as `zoo convert`'s errors list it
    reads: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("bert", "zoo.nlp.bert", "zoo.nlp.bert.bert_presets", "zoo.nlp.bert.bert_convert",
           "zoo.benchmarks.bench_bert", transformers_model_types=("bert",)),
    Family("opt", "zoo.nlp.opt", "zoo.nlp.opt.opt_presets", "zoo.nlp.opt.opt_convert",
           "zoo.benchmarks.bench_opt", transformers_model_types=("opt",)),
    Family("whisper", "zoo.audio.whisper", "zoo.audio.whisper.whisper_presets",
           "zoo.audio.whisper.whisper_convert", "zoo.benchmarks.bench_whisper",
           transformers_model_types=("whisper",), ctranslate2_specs=("WhisperSpec",),
           torch_file_kinds=(("openai_whisper", None),),
           reads="CTranslate2 Whisper folders (model.bin), openai-whisper .pt files"),
    Family("yolov8", "zoo.cv.yolov8", "zoo.cv.yolov8.yolov8_presets",
           "zoo.cv.yolov8.yolov8_convert", "zoo.benchmarks.bench_yolov8",
           torch_file_kinds=(("ultralytics", b"ultralytics"),),
           reads="ultralytics YOLOv8 .pt files"),
    Family("stable_diffusion", "zoo.diffusion.stable_diffusion",
           "zoo.diffusion.stable_diffusion.stable_diffusion_presets",
           "zoo.diffusion.stable_diffusion.stable_diffusion_convert",
           "zoo.benchmarks.bench_stable_diffusion",
           # a weight every single-file Stable Diffusion checkpoint holds
           torch_file_kinds=(("stable_diffusion",
                              b"model.diffusion_model.input_blocks.0.0.weight"),),
           diffusers=True,
           diffusers_networks=(("text_encoder", ("model", "pytorch_model")),
                               ("unet", ("diffusion_pytorch_model",)),
                               ("vae", ("diffusion_pytorch_model",))),
           reads="diffusers Stable Diffusion folders (model_index.json) and single-file "
                 "Stable Diffusion .safetensors/.ckpt checkpoints"),
)


def family_named(name: str) -> Family:
    """The entry of family `name`.

    Raises:
        KeyError: no family has that name.
    """
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)
