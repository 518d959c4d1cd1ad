"""The family table (`zoo.families`) is the one registry: every family folder
has an entry, and the catalog, format detection, `zoo convert`, the
conversion scripts, `zoo benchmark` and `zoo.models` all agree with it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from zoo.families import FAMILIES, family_named

ROOT = Path(__file__).resolve().parents[1]
# format name (zoo.presets.formats.detect_format) -> the table field that claims it
CLAIMS = {"transformers": "transformers_model_types", "ctranslate2": "ctranslate2_specs",
          "torch_file": "torch_file_kinds", "diffusers": "diffusers"}

pytestmark = pytest.mark.once  # the same on every backend


def test_every_family_folder_has_an_entry():
    folders = {".".join(p.parent.relative_to(ROOT).parts)
               for p in ROOT.glob("zoo/*/*/*_presets.py")}
    assert folders == {f.package for f in FAMILIES}
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    for family in FAMILIES:
        for module in (family.presets, family.converter):
            assert module.startswith(family.package + "."), (family.name, module)
        assert (ROOT / "scripts" / "convert_weights" / f"convert_{family.name}.py").is_file()
    with pytest.raises(KeyError):
        family_named("gpt")


def test_catalog_and_benchmark_read_the_table():
    from zoo.benchmarks.suite import FAMILIES as BENCHMARKS
    from zoo.presets import catalog

    assert {e["family"] for e in catalog().values()} == {f.name for f in FAMILIES}
    assert BENCHMARKS == {f.name: f.benchmark for f in FAMILIES}
    for family in FAMILIES:
        assert callable(importlib.import_module(family.benchmark).summary), family.name


def test_converters_claim_what_their_module_converts():
    from zoo.cli_convert import CONVERSIONS

    assert list(CONVERSIONS) == [f.converter for f in FAMILIES]
    for family in FAMILIES:
        module = importlib.import_module(family.converter)
        formats = CONVERSIONS[family.converter]
        assert formats is module.SOURCE_FORMATS
        claimed = {fmt for fmt, field in CLAIMS.items() if getattr(family, field)}
        assert set(formats) == claimed, family.name
        for fmt in formats.values():
            assert callable(getattr(module, fmt.convert)), (family.name, fmt.convert)
            assert fmt.compare is None or callable(getattr(module, fmt.compare))


def test_models_exports_every_family():
    import zoo.models

    for family in FAMILIES:
        exported = importlib.import_module(family.package).__all__
        assert set(exported) <= set(zoo.models.__all__), family.name
        assert all(getattr(zoo.models, name) is getattr(importlib.import_module(
            family.package), name) for name in exported), family.name


def test_single_file_kinds_and_diffusers_downloads_come_from_the_table(tmp_path):
    import zipfile

    from zoo.presets.formats import supported, torch_file_kind
    from zoo.presets.handles import diffusers_files

    kinds = [kind for f in FAMILIES for kind in f.torch_file_kinds]
    fallback = [name for name, marker in kinds if marker is None]
    assert len(fallback) == 1  # one family takes the .pt files no bytes identify
    for name, marker in kinds:  # each kind is found by its bytes, in a pickle
        path = tmp_path / f"{name}.pt"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", b"\x80\x02" + (marker or b"nothing known"))
        assert torch_file_kind(path) == name
    for family in FAMILIES:
        converts_more = family.ctranslate2_specs or family.torch_file_kinds or family.diffusers
        assert bool(family.reads) == bool(converts_more), family.name
        assert family.reads in supported()
        assert bool(family.diffusers_networks) == family.diffusers, family.name
        for network, stems in family.diffusers_networks:
            files = [f"{network}/config.json", f"{network}/{stems[0]}.safetensors"]
            assert set(files) <= set(diffusers_files(files)), (family.name, network)
