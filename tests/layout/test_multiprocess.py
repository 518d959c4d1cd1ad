"""Two jax processes of four CPU devices each, started by `zoo launch`, equal one process.

The job (`multiprocess_worker.py`) forms one 8-device mesh through
`keras.distribution.initialize()` (gloo collectives between the processes)
and runs `multiprocess_cases` under zoo's layout maps on meshes (2, 4) and
(1, 8): OPT logits, greedy ids, three `fit` steps and a `save_to_preset` of
the trained model (written once, by process 0, while process 1 gives its
shards), BERT's and Whisper's forward passes, and a raw transformers
checkpoint converted on first use (process 0 converts, the other waits);
then `DataParallel` fine-tuning on raw strings (BERT classifier, OPT with
LoRA), each process feeding half of every global batch.
This process computes the same without a distribution and compares.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.layout import multiprocess_cases as cases

ROOT = Path(__file__).resolve().parents[2]
MESHES = ("2,4", "1,8")

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax",
                                reason="Keras' distribution spans processes on jax")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from tests.nlp.opt.reference import make_hf_opt
    from zoo.models import BertBackbone, OPTBackbone, WhisperBackbone

    work = tmp_path_factory.mktemp("multiprocess")
    cases.make_presets(work)
    make_hf_opt(work / "hf_opt", vocab_size=64, num_attention_heads=8)
    hub = work / "hub"
    env = {**__import__("os").environ, "ZOO_HOME": str(hub)}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "launch", "--processes", "2",
         "--devices-per-process", "4", "--timeout", "300", "--",
         "python", str(Path(__file__).with_name("multiprocess_worker.py")), str(work), *MESHES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    log = "\n".join(line for line in run.stdout.splitlines() if "[Gloo]" not in line)
    assert run.returncode == 0, log[-8000:] + run.stderr[-3000:]
    _, opt = cases.opt_run(work / "opt", host=numpy)
    single = {**{f"opt_{k}": v for k, v in opt.items()},
              "bert": numpy(BertBackbone.from_preset(work / "bert")(
                  cases.BERT_INPUTS)["sequence_output"])}
    out = WhisperBackbone.from_preset(work / "whisper")(cases.WHISPER_INPUTS)
    single["whisper_encoder"] = numpy(out["encoder_sequence_output"])
    single["whisper_decoder"] = numpy(out["decoder_sequence_output"])
    reference_hub = work / "reference_hub"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ZOO_HOME", str(reference_hub))
        single["converted"] = numpy(OPTBackbone.from_preset(work / "hf_opt")(cases.INPUTS))
    single.update(cases.data_parallel_fit(work))
    return {"work": work, "hub": hub, "single": single, "log": log}


def results(job, mesh):
    name = mesh.replace(",", "x")
    return [dict(np.load(job["work"] / f"result_{name}_{p}.npz")) for p in (0, 1)]


@pytest.mark.parametrize("mesh", MESHES)
def test_two_processes_equal_one(job, mesh):
    single = job["single"]
    for process, got in enumerate(results(job, mesh)):
        np.testing.assert_array_equal(got["opt_ids"], single["opt_ids"])
        np.testing.assert_allclose(got["opt_losses"], single["opt_losses"], atol=1e-5)
        for key in ("opt_logits", "opt_logits_after_fit", "bert", "whisper_encoder",
                    "whisper_decoder") + (("converted",) if mesh == MESHES[0] else ()):
            np.testing.assert_allclose(got[key], single[key], atol=1e-5,
                                       err_msg=f"{key}, process {process}")
        # each process placed shards on its own 4 devices only
        assert got["opt_shard_devices"].tolist() == [4, process]


@pytest.mark.parametrize("mesh", MESHES)
def test_save_from_the_sharded_job_writes_one_complete_preset(job, mesh):
    from zoo.core.preset_io import read_metadata
    from zoo.models import OPTCausalLM

    saved = job["work"] / f"saved_{mesh.replace(',', 'x')}"
    assert read_metadata(saved)["task_class"] == "OPTCausalLM"
    leftovers = [p.name for p in saved.parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # no temp folder of a second writer
    lm = OPTCausalLM.from_preset(saved)  # unsharded, in this process
    np.testing.assert_allclose(numpy(lm(cases.INPUTS)), job["single"]["opt_logits_after_fit"],
                               atol=1e-5)


def test_the_job_converted_the_raw_checkpoint_once(job):
    presets = [p for p in job["hub"].rglob("metadata.json")]
    assert len(presets) == 1, presets
    assert "process 1 of 2: wrote" in job["log"] and "process 0 of 2: wrote" in job["log"]


def test_data_parallel_fine_tuning_feeds_each_process_its_half(job):
    """Every process gets the whole dataset and the global batch size; each
    feeds its half of every global batch, and the losses are one process's."""
    from zoo.models import Task

    got = [dict(np.load(job["work"] / f"result_dp_{p}.npz")) for p in (0, 1)]
    for name in ("bert_classifier", "opt_lm"):
        for process in (0, 1):
            np.testing.assert_allclose(got[process][f"{name}_losses"],
                                       job["single"][f"{name}_losses"], atol=1e-5,
                                       err_msg=f"{name}, process {process}")
    # What each process fed (Keras may read a batch more than once): exactly
    # the rows 4p..4p+3 of each global batch of 8, as the whole batch is padded.
    half = cases.GLOBAL_BATCH // 2
    expected: list[set] = [set(), set()]
    for name, texts in (("bert_classifier", cases.TEXTS), ("opt_lm", cases.OPT_TEXTS)):
        preprocessor = Task.from_preset(job["work"] / name).preprocessor
        for start in range(0, len(texts), cases.GLOBAL_BATCH):
            x = keras.utils.unpack_x_y_sample_weight(
                preprocessor(texts[start:start + cases.GLOBAL_BATCH]))[0]
            ids = np.asarray(x["token_ids"])[:, :4]
            for process in (0, 1):
                expected[process] |= {tuple(row) for row in ids[process * half:][:half]}
    assert expected[0] != expected[1]
    for process in (0, 1):
        assert {tuple(row) for row in got[process]["fed"]} == expected[process], process
