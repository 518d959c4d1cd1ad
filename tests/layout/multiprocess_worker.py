"""One process of the multi-process job `test_multiprocess.py` starts through
`zoo launch` (not collected by pytest).

    python multiprocess_worker.py WORK_DIR MESH...   (MESH: "2,4", "1,8")

Every process: `keras.distribution.initialize()`, then under zoo's layout
maps on the global mesh: OPT from its preset (logits, greedy ids, three `fit`
steps, `save_to_preset` of the trained model into WORK_DIR/saved_MESH),
BERT's and Whisper's forward passes; then data-parallel fine-tuning on raw
strings over all 8 devices, and (first mesh only) OPT from the raw
transformers folder WORK_DIR/hf_opt, which process 0 converts into the hub
while the others wait. Each process writes what it saw to
WORK_DIR/result_MESH_PROCESS.npz; the test compares them with one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import faulthandler

import keras

# A process stuck in a collective prints where it is, instead of the job
# waiting silently for the launcher's timeout.
faulthandler.dump_traceback_later(240, exit=True)
keras.distribution.initialize()  # first: before any jax array exists

import jax  # noqa: E402
import numpy as np  # noqa: E402

import zoo.layout  # noqa: E402
from zoo.core import processes  # noqa: E402
from zoo.models import BertBackbone, OPTBackbone, WhisperBackbone  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.layout.multiprocess_cases import (  # noqa: E402
    BERT_INPUTS,
    INPUTS,
    WHISPER_INPUTS,
    data_parallel_fit,
    forward,
    opt_run,
)


def main(work: Path, mesh_text: str, convert: bool) -> None:
    shape = tuple(int(n) for n in mesh_text.split(","))
    assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(),
                                                                   jax.device_count())
    mesh = zoo.layout.make_mesh(shape)
    result = {}
    if convert:
        with zoo.layout.model_parallel(OPTBackbone.get_layout_map(mesh)).scope():
            converted = OPTBackbone.from_preset(work / "hf_opt")
            result["converted"] = processes.host_value(forward(converted, INPUTS))
    with zoo.layout.model_parallel(OPTBackbone.get_layout_map(mesh)).scope():
        lm, opt = opt_run(work / "opt", host=processes.host_value)
        result.update({f"opt_{k}": v for k, v in opt.items()})
        held = [s for v in lm.backbone.weights for s in v.value.addressable_shards]
        result["opt_shard_devices"] = np.array([len({s.device.id for s in held})] + sorted(
            {s.device.process_index for s in held}))  # (how many, whose)
        lm.save_to_preset(work / f"saved_{mesh_text.replace(',', 'x')}")
    with zoo.layout.model_parallel(BertBackbone.get_layout_map(mesh)).scope():
        bert = BertBackbone.from_preset(work / "bert")
        result["bert"] = processes.host_value(forward(bert, BERT_INPUTS)["sequence_output"])
    with zoo.layout.model_parallel(WhisperBackbone.get_layout_map(mesh)).scope():
        whisper = WhisperBackbone.from_preset(work / "whisper")
        out = forward(whisper, WHISPER_INPUTS)
        result["whisper_encoder"] = processes.host_value(out["encoder_sequence_output"])
        result["whisper_decoder"] = processes.host_value(out["decoder_sequence_output"])
    name = f"result_{mesh_text.replace(',', 'x')}_{jax.process_index()}.npz"
    np.savez(work / name, **result)
    print(f"process {jax.process_index()} of {jax.process_count()}: wrote {name}", flush=True)


def data_parallel(work: Path) -> None:
    """`DataParallel` over the job's 8 devices: raw-string fine-tuning where
    each process feeds its half of every global batch (recorded here)."""
    fed = []
    local_part = processes.local_part

    def recording(batch):
        part = local_part(batch)
        fed.append(part[0]["token_ids"][:, :4])  # the first ids of each row fed
        return part

    processes.local_part = recording
    with keras.distribution.DataParallel().scope():
        result = data_parallel_fit(work)
    processes.local_part = local_part
    result["fed"] = np.concatenate(fed)
    np.savez(work / f"result_dp_{jax.process_index()}.npz", **result)


if __name__ == "__main__":
    for i, mesh_text in enumerate(sys.argv[2:]):
        main(Path(sys.argv[1]), mesh_text, convert=i == 0)
    data_parallel(Path(sys.argv[1]))
