"""Checkpoints stored in float16 or bfloat16 convert and pass verification
(issue 21, part 0).

Most large checkpoints are published in 16 bits (every OPT from 1.3b up in
float16, many fine-tunes in bfloat16), and transformers now loads a
checkpoint in the dtype it stores. Verification compares like with like:
the reference in float32 from the same 16-bit numbers zoo reads, so the
family's usual float32 tolerance holds. Each case builds a small random model
with the reference library, stores it in 16 bits (safetensors, and torch's
pickle format for OPT), converts it with the family's converter and checks
the difference against the reference, as `zoo convert` does.
"""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from zoo.cli_convert import CONVERSIONS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resave(model, folder: Path, dtype: str, safe: bool = True, extra: Path | None = None) -> Path:
    """`model` stored in `dtype` into `folder` (safetensors, or torch's
    pickle format as older checkpoints are), with the files of `extra`
    (tokenizer, ...) that are not weights or configs."""
    model.to(DTYPES[dtype]).save_pretrained(folder)
    if not safe:  # transformers 5 writes safetensors only
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    for file in (extra.iterdir() if extra else []):
        if not (folder / file.name).exists():
            shutil.copy(file, folder / file.name)
    return folder


def check_converts(module: str, kind: str, source: Path, output: Path, dtype: str = "source",
                   stored: str | None = None) -> float:
    """Convert `source` like `zoo convert --dtype DTYPE` does, check the
    preset stores its floating-point weights in `stored` (and records it),
    that the converter held the model in that dtype (never a float32 copy of
    a 16-bit checkpoint) while config.json still builds float32 by default,
    and return the verification's difference."""
    import importlib
    import json
    from unittest import mock

    from zoo.core.preset_io import read_metadata

    from zoo.core import deferred

    fmt = CONVERSIONS[module][kind]
    converter = importlib.import_module(module)
    held: set[str] = set()
    streamed: list[bool] = []
    alive: list[Any] = []  # weak references to the arrays computed for writing
    most_alive = [0]

    def spy(directory, **parts):
        model = parts.get("task") or parts.get("backbone")
        held.update(v.dtype for v in model.weights if "float" in v.dtype)
        # streamed (issue 24): no backbone weight holds a value; each is computed
        # from the checkpoint when the writer reaches it
        streamed.append(all(deferred.is_deferred(v) and deferred.has_later_value(v)
                            for v in getattr(model, "backbone", model).weights))
        return original(directory, **parts)

    def one_at_a_time(variable):
        value = later_value(variable)
        if value is not None:
            alive[:] = [r for r in alive if r() is not None]
            most_alive[0] = max(most_alive[0], len(alive) + 1)
            alive.append(weakref.ref(value))
        return value

    original, later_value = converter.write_preset, deferred.later_value
    with mock.patch.object(converter, "write_preset", spy), \
            mock.patch.object(deferred, "later_value", one_at_a_time), \
            mock.patch.object(deferred, "materialize", side_effect=AssertionError(
                "a converter gave a weight its value in memory")):
        getattr(converter, fmt.convert)(source, output, str(source), dtype=dtype)
    assert streamed == [True]
    assert most_alive[0] == 1  # the writer let go of each weight before the next
    if stored is not None:
        assert held == {stored}
        assert preset_dtypes(output) == {stored}
        assert read_metadata(output)["storage_dtype"] == stored
    config = json.loads((output / "config.json").read_text())["config"]
    assert config["dtype"]["config"]["name"] == "float32"
    diff = getattr(converter, fmt.compare)(output, source)
    assert diff is not None and diff <= fmt.tolerance, (diff, fmt.tolerance)
    return diff


def preset_dtypes(preset: Path) -> set[str]:
    """The dtypes of a preset's floating-point weights, as stored."""
    import h5py

    found = set()
    for file in preset.glob("*.weights.h5"):
        with h5py.File(file, "r") as f:
            f.visititems(lambda _, item: found.add(item.attrs["dtype"])
                         if isinstance(item, h5py.Dataset) else None)
    return {d for d in found if "float" in d}


def preset_bytes(preset: Path) -> int:
    """The bytes of a preset's weight tensors (without HDF5's headers)."""
    import h5py

    sizes = []
    for file in preset.glob("*.weights.h5"):
        with h5py.File(file, "r") as f:
            f.visititems(lambda _, item: sizes.append(item.nbytes)
                         if isinstance(item, h5py.Dataset) else None)
    return sum(sizes)


def stored_dtypes(folder: Path) -> set[str]:
    from zoo.presets.checkpoint_io import read_transformers_weights

    return {str(np.asarray(v).dtype) for v in read_transformers_weights(folder).values()}


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_bert(tmp_path, dtype):
    from tests.nlp.bert.reference import make_hf_bert

    original = make_hf_bert(tmp_path / "f32", "BertForSequenceClassification")
    model = transformers.BertForSequenceClassification.from_pretrained(original,
                                                                       dtype=torch.float32)
    source = resave(model, tmp_path / dtype, dtype, extra=original)
    assert stored_dtypes(source) == {dtype}
    check_converts("zoo.nlp.bert.bert_convert", "transformers", source, tmp_path / "preset",
                   stored=dtype)


@pytest.mark.parametrize("dtype, safe", [("float16", True), ("bfloat16", True),
                                         ("float16", False)],
                         ids=["float16", "bfloat16", "float16-pytorch_model.bin"])
def test_opt(tmp_path, dtype, safe):
    from tests.nlp.opt.reference import make_hf_opt

    original = make_hf_opt(tmp_path / "f32")
    model = transformers.OPTForCausalLM.from_pretrained(original, dtype=torch.float32)
    source = resave(model, tmp_path / dtype, dtype, safe=safe)
    assert (source / "pytorch_model.bin").is_file() != safe
    assert stored_dtypes(source) == {dtype}
    check_converts("zoo.nlp.opt.opt_convert", "transformers", source, tmp_path / "preset",
                   stored=dtype)
    # the preset stores as many weight bytes as the checkpoint (not twice: float32;
    # HDF5's per-dataset headers, about 1 KB each, matter only for tiny models)
    from zoo.presets.checkpoint_io import read_transformers_weights

    checkpoint = sum(np.asarray(v).nbytes for k, v in read_transformers_weights(source).items()
                     if k != "lm_head.weight")  # tied to the token embedding: stored once
    assert preset_bytes(tmp_path / "preset") == checkpoint


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_whisper(tmp_path, dtype):
    from tests.audio.whisper.reference import random_whisper

    model = random_whisper(tmp_path / "f32", perturb=True)
    source = resave(model, tmp_path / dtype, dtype, extra=tmp_path / "f32")
    assert stored_dtypes(source) == {dtype}
    check_converts("zoo.audio.whisper.whisper_convert", "transformers", source,
                   tmp_path / "preset", stored=dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_stable_diffusion(tmp_path, dtype):
    diffusers = pytest.importorskip("diffusers")
    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline

    make_pipeline(tmp_path / "f32", num_merges=200)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "f32" / "diffusers",
                                                             dtype=torch.float32)
    source = tmp_path / dtype
    pipe.to(DTYPES[dtype]).save_pretrained(source)
    from zoo.presets.checkpoint_io import read_safetensors

    stored = read_safetensors(source / "unet" / "diffusion_pytorch_model.safetensors")
    assert {str(np.asarray(v).dtype) for v in stored.values()} == {dtype}
    check_converts("zoo.diffusion.stable_diffusion.stable_diffusion_convert", "diffusers",
                   source, tmp_path / "preset", stored=dtype)


def test_zoo_convert_of_a_float16_opt(tmp_path, zoo_home):
    """The case of issue 21: `zoo convert` on a float16 OPT ended with
    "conversion does not match the reference; nothing written"."""
    from tests.nlp.opt.reference import make_hf_opt
    from zoo.cli import main

    original = make_hf_opt(tmp_path / "f32")
    model = transformers.OPTForCausalLM.from_pretrained(original, dtype=torch.float32)
    source = resave(model, tmp_path / "f16", "float16")
    assert main(["convert", str(source), "--name", "opt-f16"]) == 0
    assert (zoo_home / "presets" / "opt-f16" / "metadata.json").is_file()


@pytest.mark.parametrize("source_dtype, dtype", [("float32", "bfloat16"), ("float16", "float32"),
                                                 ("float16", "bfloat16")])
def test_dtype_option_chooses_the_storage(tmp_path, source_dtype, dtype):
    """`--dtype`: the verification rounds the reference's weights the same way,
    so a float32 checkpoint stored in bfloat16 passes at float32 tolerance."""
    from tests.nlp.opt.reference import make_hf_opt

    source = make_hf_opt(tmp_path / "f32")
    if source_dtype != "float32":
        model = transformers.OPTForCausalLM.from_pretrained(source, dtype=torch.float32)
        source = resave(model, tmp_path / source_dtype, source_dtype)
    check_converts("zoo.nlp.opt.opt_convert", "transformers", source, tmp_path / "preset",
                   dtype=dtype, stored=dtype)


def test_16_bit_preset_loads_in_any_dtype(tmp_path):
    """A float16 preset loads as float32 by default (the same numbers as the
    checkpoint, computed in float32) and in bfloat16 when asked, cast one
    tensor at a time as it is read."""
    from tests.nlp.opt.reference import make_hf_opt, random_batch
    from zoo.models import OPTBackbone

    original = make_hf_opt(tmp_path / "f32")
    model = transformers.OPTForCausalLM.from_pretrained(original, dtype=torch.float32)
    source = resave(model, tmp_path / "f16", "float16")
    check_converts("zoo.nlp.opt.opt_convert", "transformers", source, tmp_path / "preset",
                   stored="float16")
    default = OPTBackbone.from_preset(tmp_path / "preset")
    assert {w.dtype for w in default.weights if "float" in w.dtype} == {"float32"}
    half = transformers.OPTForCausalLM.from_pretrained(source, dtype=torch.float16)
    np.testing.assert_array_equal(  # float16 -> float32 is exact
        keras.ops.convert_to_numpy(default.token_embedding.embeddings),
        half.model.decoder.embed_tokens.weight.detach().float().numpy())
    bf16 = OPTBackbone.from_preset(tmp_path / "preset", dtype="bfloat16")
    assert {w.dtype for w in bf16.weights if "float" in w.dtype} == {"bfloat16"}
    batch = random_batch(2, 8, default.vocabulary_size)
    ours = np.asarray(bf16.predict_on_batch(batch), "float32")
    reference = np.asarray(default.predict_on_batch(batch), "float32")
    assert np.isfinite(ours).all()
    assert np.abs(ours - reference).max() < 0.1 * np.abs(reference).max()
