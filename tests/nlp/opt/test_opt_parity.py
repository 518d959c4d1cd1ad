"""Numerical parity with transformers' OPTForCausalLM (tolerance: 1e-4 max abs
on the logits of real tokens, float32), for every OPT variant."""

import numpy as np
import pytest
import torch

from tests.nlp.opt.reference import VARIANTS, make_hf_opt, random_batch
from zoo.models import OPTBackbone, OPTCausalLM, Task

LOGIT_ATOL = 1e-4


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("left_pad", [True, False])
def test_logits_match_transformers(tmp_path, zoo_home, variant, left_pad):
    import transformers

    folder = make_hf_opt(tmp_path / "hf", **VARIANTS[variant])
    reference = transformers.OPTForCausalLM.from_pretrained(folder).eval()
    lm = Task.from_preset(folder)
    assert isinstance(lm, OPTCausalLM)
    batch = random_batch(3, 12, 96, seed=7, left_pad=left_pad)
    with torch.no_grad():
        expected = reference(input_ids=torch.tensor(batch["token_ids"]).long(),
                             attention_mask=torch.tensor(batch["padding_mask"]).long()
                             ).logits.numpy()
    logits = np.asarray(lm.predict_on_batch(batch))
    real = batch["padding_mask"].astype(bool)
    np.testing.assert_allclose(logits[real], expected[real], atol=LOGIT_ATOL)


def test_config_map(tmp_path, zoo_home):
    folder = make_hf_opt(tmp_path / "hf", **VARIANTS["post_ln_projection"])
    backbone = OPTBackbone.from_preset(folder)
    assert backbone.normalize_first is False and backbone.final_layer_norm is False
    assert backbone.embedding_dim == 16 and backbone.project_in is not None
