"""Every Python block in README.md runs, so the README cannot rot.

The blocks run in order in one namespace, from a scratch directory that sees
the repository's `tests/data`. Presets that need the network here
(bert_base_en_uncased, opt_125m_en, stable_diffusion_v1_5, opt_6.7b_en) are
stood in for by tiny random models of the same family, converted from their
reference libraries and saved in the hub under the catalog name (a hub name
is found before the catalog's sources). The offline presets are the real ones.

The sharding block runs on jax in a subprocess with 8 simulated CPU devices;
the `zoo` command lines in plain blocks are parsed by the real parser.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == language]


def is_sharding(code: str) -> bool:
    return "zoo.layout" in code


def save_stand_in(source: Path, name: str, hub: Path) -> None:
    """Convert a small reference checkpoint and save it under a catalog name."""
    from zoo.models import Task

    Task.from_preset(source).save_to_preset(hub / "presets" / name)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """A hub with tiny models saved under the network-only presets' names."""
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    from tests.diffusion.stable_diffusion.tiny_pipeline import make_pipeline
    from tests.nlp.bert.reference import make_hf_bert
    from tests.nlp.opt.reference import make_hf_opt
    from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS, OPT_TOKENIZER_CONFIG
    from tests.tokenizers.test_byte_pair import train_byte_level_bpe

    root = tmp_path_factory.mktemp("readme")
    hub = root / "zoo_home"
    previous = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = str(hub)
    try:
        save_stand_in(make_hf_bert(root / "bert", "BertForSequenceClassification",
                                   num_labels=2), "bert_base_en_uncased", hub)
        for name, overrides in (("opt_125m_en", {}),
                                ("opt_6.7b_en", {"hidden_size": 64, "num_attention_heads": 8,
                                                 "ffn_dim": 128, "word_embed_proj_dim": 64})):
            folder = root / name
            folder.mkdir()
            vocab_file, _ = train_byte_level_bpe(folder, OPT_SPECIALS, vocab_size=400)
            vocab = len(json.loads(vocab_file.read_text()))
            make_hf_opt(folder, seed=3, vocab_size=-(-vocab // 8) * 8,
                        max_position_embeddings=128, **overrides)
            (folder / "tokenizer_config.json").write_text(json.dumps(OPT_TOKENIZER_CONFIG))
            save_stand_in(folder, name, hub)
        make_pipeline(root / "sd")
        save_stand_in(root / "sd" / "diffusers", "stable_diffusion_v1_5", hub)
    finally:
        if previous is None:
            del os.environ["ZOO_HOME"]
        else:
            os.environ["ZOO_HOME"] = previous
    return hub


def test_readme_has_the_two_commands_first():
    first = blocks("")[0].split("\n")
    assert first[0].startswith("make demo") and first[1].startswith("make test")


# Once per `make test`: every call in the README is tested per backend by the
# family and command-line tests; this checks that the README's code runs.
@pytest.mark.once(on="torch")  # 41 s there, 104 s on jax (eager jax compiles op by op)
def test_python_blocks_run(stand_ins, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_HOME", str(stand_ins))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    code = [b for b in blocks("python") if not is_sharding(b)]
    assert len(code) >= 6
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block in the failure
            raise AssertionError(f"README python block {i + 1} failed: {e!r}\n{block}") from e
    out = capsys.readouterr().out
    assert "small town by the sea" in out  # the real whisper_tiny_en transcript
    assert (tmp_path / "annotated.png").is_file() and (tmp_path / "my_classifier").is_dir()


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="sharding runs on jax")
def test_sharding_block_runs_on_eight_devices(stand_ins, tmp_path):
    (block,) = [b for b in blocks("python") if is_sharding(b)]
    script = "import keras\nassert len(__import__('jax').devices()) == 8\n" + block
    env = {**os.environ, "ZOO_HOME": str(stand_ins), "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("The capital of France is")


def test_command_lines_parse():
    """Every `zoo ...` line in the README's plain blocks is a valid command."""
    from zoo.cli import build_parser

    parser = build_parser()
    lines = [line.split("#")[0].strip() for block in blocks("") for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("zoo ")]
    assert len(commands) >= 15
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"README command does not parse: zoo {' '.join(argv)}") from e


def test_presets_table_matches_the_catalog():
    """Every catalog preset appears in the README's presets table."""
    import zoo.presets

    section = README.read_text().split("## Presets")[1].split("\n## ")[0]
    missing = [name for name in zoo.presets.list()
               if not re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", section)]
    assert not missing, f"README presets table misses {missing}"
