"""Each Stable Diffusion component against its reference, on small random models.

transformers' `CLIPTextModel`, diffusers' `UNet2DConditionModel` and
`AutoencoderKL` are built with tiny widths, every parameter perturbed with
seeded noise, and ported with zoo's converters. Tolerance: 1e-4 max abs
(float32; measured 3e-6 to 5e-6 with outputs of size ~2).
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest

from tests.diffusion.stable_diffusion.tiny_pipeline import write_clip_tokenizer_files
from zoo.core.errors import ConversionError
from zoo.diffusion.stable_diffusion.clip_convert import port_text_encoder, text_encoder_config
from zoo.diffusion.stable_diffusion.clip_text_encoder import CLIPTextEncoder
from zoo.diffusion.stable_diffusion.unet import UNet
from zoo.diffusion.stable_diffusion.unet_convert import port_unet, unet_config
from zoo.diffusion.stable_diffusion.vae import VAEDecoder, VAEEncoder
from zoo.diffusion.stable_diffusion.vae_convert import (
    port_vae_decoder,
    port_vae_encoder,
    vae_config,
)
from zoo.layers import attention as zoo_attention
from zoo.layers import conv as zoo_conv
from zoo.presets.checkpoint_io import WeightReader
from zoo.tokenizers.clip import CLIPTokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4
TEXTS = ["A photo of an astronaut riding a horse!", "Café déjà vu — naïve",
         "東京タワーの写真 🐱🚀", "It's 2024, isn't it? 3.14159", "   lots   of\n\twhitespace  ",
         "UPPER case", "", "don't stop <|endoftext|> x", " ".join(["word"] * 100)]


def perturbed(model, seed: int):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32")))


def compiled(layer):
    """`layer`'s forward, compiled on jax: eager jax dispatches and compiles op
    by op (and eager `ops.map`, the blocked attention, compiles its loop anew
    on every call), which made one tiny UNet comparison take 40 to 90 s there
    (about half with this). jax reads the weights when it traces: compile after
    porting. tensorflow stays eager (a tf.function was slower here)."""
    if keras.backend.backend() != "jax":
        return layer
    import jax

    return jax.jit(layer.__call__)


# -- tokenizer ------------------------------------------------------------------
def test_clip_tokenizer_equals_transformers(tmp_path):
    folder = write_clip_tokenizer_files(tmp_path / "tok")
    reference = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                           pad_token="<|endoftext|>", model_max_length=77)
    expected = np.asarray(reference(TEXTS, padding="max_length", max_length=77,
                                    truncation=True)["input_ids"])
    ours = CLIPTokenizer.from_open_clip()
    encoded = ours.encode(TEXTS)
    np.testing.assert_array_equal(encoded["token_ids"], expected)
    np.testing.assert_array_equal(CLIPTokenizer.from_huggingface(folder).encode(TEXTS)["token_ids"],
                                  expected)
    assert encoded["num_tokens"][-1] == 102 and encoded["num_tokens"][6] == 2
    assert ours.vocabulary_size() == 49408
    assert ours.detokenize(encoded["token_ids"][1]) == "café déjà vu — naïve"
    ours.save_to_preset(tmp_path / "preset")
    again = CLIPTokenizer.from_preset(tmp_path / "preset")
    np.testing.assert_array_equal(again.encode(TEXTS)["token_ids"], expected)


def test_clip_tokenizer_reads_a_transformers_5_folder_and_its_pad_token(tmp_path):
    folder = write_clip_tokenizer_files(tmp_path / "tok")
    reference = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                           pad_token="!", model_max_length=77)
    reference.save_pretrained(tmp_path / "saved")  # tokenizer.json + tokenizer_config.json
    ours = CLIPTokenizer.from_huggingface(tmp_path / "saved")
    assert ours.special_tokens["pad"] == "!"
    expected = reference(TEXTS[:3], padding="max_length", max_length=77)["input_ids"]
    np.testing.assert_array_equal(ours.encode(TEXTS[:3])["token_ids"], np.asarray(expected))


# -- text encoder -----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_text_encoder_matches_transformers(tmp_path, activation):
    torch.manual_seed(0)
    reference = perturbed(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=77, hidden_act=activation)), 1)
    config = text_encoder_config(reference.config.to_dict())
    encoder = CLIPTextEncoder(**config)
    ids = CLIPTokenizer.from_open_clip().encode(TEXTS)["token_ids"]
    encoder(ids[:1])
    weights = WeightReader(state(reference), "clip")
    port_text_encoder(encoder, weights)
    assert weights.unused() in ([], ["text_model.embeddings.position_ids"],
                                ["embeddings.position_ids"])
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long()).last_hidden_state.numpy()
    assert np.abs(numpy(encoder(ids)) - expected).max() < TOLERANCE


def test_text_encoder_rejects_unsupported_settings():
    with pytest.raises(ConversionError, match="hidden_act='relu'"):
        text_encoder_config({"hidden_act": "relu"})


# -- UNet -------------------------------------------------------------------------
UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
            layers_per_block=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
            attention_head_dim=4, norm_num_groups=32)
UNET_V2 = {**UNET, "use_linear_projection": True, "attention_head_dim": (2, 4), "in_channels": 9,
           "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
           "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "layers_per_block": 1}


def force_fast_paths(monkeypatch, conv="winograd"):
    """Every attention of the tiny models takes the query-blocked path (partial
    blocks) and every stride-1 convolution Winograd's (3x3, partial tiles) or,
    with `conv="im2col"`, the im2col matrix product."""
    monkeypatch.setattr(zoo_attention, "BLOCKED_MIN_SCORES", 0)
    monkeypatch.setattr(zoo_attention, "BLOCK_SIZE", 7)
    if conv == "winograd":
        monkeypatch.setattr(zoo_conv, "MIN_TILES", {})
        monkeypatch.setattr(zoo_conv, "MIN_CHANNELS", {})
    else:
        monkeypatch.setattr(zoo_conv, "ENABLED", False)
        monkeypatch.setattr(zoo_conv, "IM2COL_MAX_POSITIONS",
                            {keras.backend.backend(): 1 << 30})
        monkeypatch.setattr(zoo_conv, "IM2COL_MIN_CHANNELS", 0)
    calls = {"map": 0, conv: 0}
    real_map = keras.ops.map
    real_conv = getattr(zoo_conv, f"{conv}_conv2d")

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(zoo_attention.ops, "map", counted("map", real_map))
    monkeypatch.setattr(zoo_conv, f"{conv}_conv2d", counted(conv, real_conv))
    return calls


def check_fast_paths(calls):
    blocked_backends = ("jax", "tensorflow")  # torch keeps its fused attention kernel
    assert bool(calls["map"]) == (keras.backend.backend() in blocked_backends)
    assert all(count > 0 for name, count in calls.items() if name != "map")


@pytest.mark.parametrize("config,fast", [(UNET, None), (UNET_V2, None), (UNET, "winograd"),
                                         (UNET, "im2col")],
                         ids=["sd1", "linear-9ch", "sd1-blocked-attention-winograd",
                              "sd1-im2col"])
def test_unet_matches_diffusers(config, fast, monkeypatch):
    calls = force_fast_paths(monkeypatch, fast) if fast else None
    torch.manual_seed(0)
    reference = perturbed(diffusers.UNet2DConditionModel(**config), 2)
    unet = UNet(**unet_config(dict(reference.config)))
    rng = np.random.default_rng(0)
    context = rng.normal(size=(2, 7, 24)).astype("float32")
    timesteps = np.array([999.0, 12.5], "float32")  # fractional: Karras schedules
    unet.build((None, None, None, config["in_channels"]))  # from the channel counts
    weights = WeightReader(state(reference), "unet")
    port_unet(unet, weights)
    assert weights.unused() == []
    forward = compiled(unet)
    for size in ((16, 24), (15, 22)):  # 15x22: diffusers resizes to the skips' sizes
        latents = rng.normal(size=(2, *size, config["in_channels"])).astype("float32")
        with torch.no_grad():
            expected = reference(nchw(latents), torch.from_numpy(timesteps),
                                 encoder_hidden_states=torch.from_numpy(context)).sample
        got = numpy(forward(latents, timesteps, context))
        assert np.abs(got - expected.numpy().transpose(0, 2, 3, 1)).max() < TOLERANCE, size
    if fast:
        check_fast_paths(calls)


def test_unet_config_errors_name_the_setting():
    for key, value in (("class_embed_type", "timestep"), ("addition_embed_type", "text_time"),
                       ("transformer_layers_per_block", 2),
                       ("resnet_time_scale_shift", "scale_shift")):
        with pytest.raises(ConversionError, match=key):
            unet_config({**UNET, key: value})
    with pytest.raises(ConversionError, match="SimpleCrossAttnDownBlock2D"):
        unet_config({**UNET, "down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D"]})


def test_unet_runs_in_bfloat16():
    unet = UNet(**unet_config(UNET), dtype="bfloat16")
    unet.build((None, None, None, 4))
    out = compiled(unet)(np.ones((1, 8, 8, 4), "float32"), np.array([10.0], "float32"),
                         np.ones((1, 3, 24), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert np.isfinite(numpy(out)).all()


# -- VAE --------------------------------------------------------------------------
@pytest.mark.parametrize("layers,fast", [(1, None), (2, None), (1, "winograd")])
def test_vae_matches_diffusers(layers, fast, monkeypatch):
    calls = force_fast_paths(monkeypatch, fast) if fast else None
    torch.manual_seed(0)
    reference = perturbed(diffusers.AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=layers,
        norm_num_groups=32), 3)
    config = vae_config(dict(reference.config))
    encoder, decoder = VAEEncoder(**config), VAEDecoder(**config)
    rng = np.random.default_rng(layers)
    images = rng.uniform(-1, 1, (2, 24, 40, 3)).astype("float32")
    latents = rng.normal(size=(2, 6, 10, 4)).astype("float32")
    encoder.build(images.shape)
    decoder.build(latents.shape)
    weights = WeightReader(state(reference), "vae")
    port_vae_encoder(encoder, weights)
    port_vae_decoder(decoder, weights)
    assert weights.unused() == []
    with torch.no_grad():
        moments = reference.encode(nchw(images)).latent_dist.parameters.numpy()
        decoded = reference.decode(nchw(latents)).sample.numpy()
    got_moments, got_decoded = compiled(encoder)(images), compiled(decoder)(latents)
    assert np.abs(numpy(got_moments) - moments.transpose(0, 2, 3, 1)).max() < TOLERANCE
    assert np.abs(numpy(got_decoded) - decoded.transpose(0, 2, 3, 1)).max() < TOLERANCE
    if fast:
        check_fast_paths(calls)


def test_vae_config_errors_and_old_attention_names():
    with pytest.raises(ConversionError, match="down_block_types"):
        vae_config({"block_out_channels": [32], "down_block_types": ["AttnDownEncoderBlock2D"]})
    with pytest.raises(ConversionError, match="use_quant_conv"):
        vae_config({"block_out_channels": [32], "use_quant_conv": False})
    # Old diffusers checkpoints call the mid-block attention query/key/value/proj_attn.
    torch.manual_seed(0)
    reference = perturbed(diffusers.AutoencoderKL(
        block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",), layers_per_block=1, norm_num_groups=32), 4)
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for name, value in state(reference).items():
        for new, legacy in renames.items():
            name = name.replace(f"attentions.0.{new}.", f"attentions.0.{legacy}.")
        old[name] = value
    encoder = VAEEncoder(**vae_config(dict(reference.config)))
    x = np.zeros((1, 8, 8, 3), "float32")
    encoder(x)
    weights = WeightReader(old, "old vae")
    port_vae_encoder(encoder, weights)
    with torch.no_grad():
        expected = reference.encode(nchw(x + 0.3)).latent_dist.parameters.numpy()
    assert np.abs(numpy(encoder(x + 0.3)) - expected.transpose(0, 2, 3, 1)).max() < TOLERANCE
