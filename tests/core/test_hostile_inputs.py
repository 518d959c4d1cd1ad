"""Hostile and careless inputs to every task: each bad call raises a `ZooError`
whose message says how to fix it, before any model runs, and the model gives
the same outputs afterwards as before the bad call (on JAX, Keras detaches
the weights while its loops run; a failed loop must give them back).

One tiny random model per family, built once per module.
"""

import keras
import numpy as np
import pytest

from tests.nlp.bert.test_bert_tasks import TEXTS, tiny_backbone, tiny_preprocessor
from zoo.core.errors import InputError, ZooError
from zoo.models import (
    BertMaskedLM,
    BertMaskedLMPreprocessor,
    BertTextClassifier,
    BertTextEmbedder,
    OPTBackbone,
    OPTCausalLM,
    OPTCausalLMPreprocessor,
    StableDiffusion,
    StableDiffusionBackbone,
    StableDiffusionPreprocessor,
)
from zoo.audio.whisper.whisper_transcribe import TranscribeOptions
from zoo.utils.audio import AudioError, load_audio
from zoo.utils.images import ImageError


def rejected(call, error=InputError, match=None):
    """Run `call`, expecting `error` (a ZooError) with a "Fix:" in its message."""
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, ZooError)
    assert "Fix:" in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


# -- BERT: embedder, classifier, masked LM (one shared backbone) --------------

@pytest.fixture(scope="module")
def bert():
    backbone = tiny_backbone()
    mlm_pre = tiny_preprocessor(BertMaskedLMPreprocessor, mask_selection_length=4, seed=0)
    tasks = {"embedder": BertTextEmbedder(backbone, preprocessor=tiny_preprocessor()),
             "classifier": BertTextClassifier(backbone, num_classes=2,
                                              preprocessor=tiny_preprocessor()),
             "masked_lm": BertMaskedLM(backbone, preprocessor=mlm_pre)}
    # fixed model inputs (the masked LM's preprocessor masks at random)
    inputs = {name: keras.tree.map_structure(np.asarray, task.preprocessor(TEXTS[:2]))
              for name, task in tasks.items()}
    inputs["masked_lm"] = inputs["masked_lm"][0]
    return tasks, inputs, {name: task.predict(inputs[name]) for name, task in tasks.items()}


BAD_RAW = {
    "empty list": [],
    "empty tuple": (),
    "empty array": np.array([], dtype=str),
    "empty sentence pairs": ([], []),
    "bytes": b"a good film",
    "None": None,
    "a number": 5,
}


@pytest.mark.parametrize("name", ["embedder", "classifier", "masked_lm"])
def test_bert_tasks_reject_bad_raw_inputs_and_keep_working(bert, name):
    tasks, inputs, before = bert
    task = tasks[name]
    for bad in BAD_RAW.values():
        rejected(lambda: task.predict(bad))
    rejected(lambda: task.predict(TEXTS[:2], batch_size=0), match="batch_size=0")
    rejected(lambda: task.predict(TEXTS[:2], batch_size=-1), match="batch_size=-1")
    # Element types are the tokenizer's to check: an InputError, model unharmed
    # (a lone surrogate, as text read with errors="surrogateescape" holds, and
    # bytes that are not UTF-8 included).
    for bad in ([123], [None], ["fine", 3.5], ["caf\udce9"], [b"caf\xe9"]):
        rejected(lambda: task.predict(bad))
    np.testing.assert_allclose(task.predict(inputs[name]), before[name], atol=1e-6)


def test_embed_rejects_empty_and_bytes(bert):
    tasks, inputs, before = bert
    embedder = tasks["embedder"]
    rejected(lambda: embedder.embed([]), match="empty")
    rejected(lambda: embedder.embed(b"a good film"), match="decode")
    rejected(lambda: embedder.embed(["a"], batch_size=0), match="batch_size")
    np.testing.assert_allclose(embedder.embed(TEXTS[:2]), before["embedder"], atol=1e-6)


def test_a_dict_missing_an_input_is_named(bert):
    tasks, inputs, before = bert
    task = tasks["embedder"]
    x = inputs["embedder"]
    wrong = {"token_idz": x["token_ids"], "padding_mask": x["padding_mask"],
             "segment_ids": x["segment_ids"]}
    rejected(lambda: task.predict(wrong), match=r"lacks \['token_ids'\]")
    np.testing.assert_allclose(task.predict(TEXTS[:2]), before["embedder"], atol=1e-6)


def test_a_failure_inside_keras_predict_leaves_the_weights(bert):
    # Inputs of the wrong rank fail inside Keras' predict loop, after JAX's
    # trainer detached every weight: they must come back.
    tasks, inputs, before = bert
    task = tasks["embedder"]
    x = inputs["embedder"]
    raised = False
    try:  # a shape error from inside the model on JAX (others may broadcast)
        task.predict({**x, "padding_mask": x["padding_mask"][:, :5]}, verbose=0)
    except Exception:
        raised = True
    assert raised or keras.backend.backend() != "jax"

    def batches():
        yield x
        raise RuntimeError("the data source failed")

    with pytest.raises(RuntimeError, match="data source"):
        task.predict(batches(), verbose=0)
    assert all(v._value is not None for v in task.variables)
    # the backbone's own Keras loops too (a Backbone is a keras.Model as well)
    hidden = task.backbone.predict(x, verbose=0)
    with pytest.raises(RuntimeError, match="data source"):
        task.backbone.predict(batches(), verbose=0)
    assert all(v._value is not None for v in task.backbone.variables)
    np.testing.assert_allclose(task.backbone.predict(x, verbose=0)["sequence_output"],
                               hidden["sequence_output"], atol=1e-6)
    np.testing.assert_allclose(task.predict(TEXTS[:2]), before["embedder"], atol=1e-6)
    np.testing.assert_allclose(task.embed(TEXTS[:2]), before["embedder"], atol=1e-6)


def test_a_failure_inside_keras_fit_leaves_trained_weights():
    clf = BertTextClassifier(tiny_backbone(), num_classes=2, preprocessor=tiny_preprocessor())
    clf.compile(optimizer=keras.optimizers.SGD(0.1), loss=clf.loss)
    x, y = clf.preprocessor(TEXTS[:4]), np.array([1, 1, 0, 0])

    def batches():
        yield x, y
        raise RuntimeError("the data source failed")

    with pytest.raises(RuntimeError, match="data source"):
        clf.fit(batches(), epochs=1, verbose=0)
    assert all(v._value is not None for v in clf.variables)
    assert np.isfinite(clf.predict(TEXTS[:2])).all()
    rejected(lambda: clf.fit([], []), match="empty")


def test_fill_mask_errors(bert):
    tasks, _, _ = bert
    mlm = tasks["masked_lm"]
    rejected(lambda: mlm.fill_mask([]), match="empty")
    rejected(lambda: mlm.fill_mask("no mask here"), match=r"No \[MASK\]")
    rejected(lambda: mlm.fill_mask("a [MASK] film", top_k=0), match="top_k")
    assert len(mlm.fill_mask("a [MASK] film", top_k=2)[0]) == 2


# -- OPT: generate ------------------------------------------------------------

@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    from tests.nlp.opt.test_opt_tokenizer import OPT_SPECIALS
    from tests.tokenizers.test_byte_pair import train_byte_level_bpe
    from zoo.nlp.opt.opt_tokenizer import OPTTokenizer

    vocab, merges = train_byte_level_bpe(tmp_path_factory.mktemp("opt_bpe"), OPT_SPECIALS,
                                         vocab_size=300)
    tokenizer = OPTTokenizer(vocabulary=str(vocab), merges=str(merges))
    backbone = OPTBackbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=1,
                           num_heads=2, hidden_dim=16, intermediate_dim=32,
                           max_sequence_length=32)
    lm = OPTCausalLM(backbone, OPTCausalLMPreprocessor(tokenizer, sequence_length=16))
    return lm, lm.generate(["the cat", "a dog ran"], max_new_tokens=3, stop_token_ids=())


def test_generate_rejects_bad_prompts_and_arguments(opt):
    lm, before = opt
    ok = ["the cat", "a dog ran"]
    rejected(lambda: lm.generate([]), match="empty")
    rejected(lambda: lm.generate(""), match="prompt is empty")
    rejected(lambda: lm.generate(["fine", ""]), match="prompt is empty")
    rejected(lambda: lm.generate(b"the cat"), match="decode")
    rejected(lambda: lm.generate(None))
    for value in (0, -1, "5", True, 2.0):
        rejected(lambda: lm.generate(ok, max_new_tokens=value), match="max_new_tokens")
    rejected(lambda: lm.generate("the cat " * 40, max_new_tokens=3), match="context of 32")
    rejected(lambda: lm.generate({"token_idz": np.ones((1, 3), "int32")}),
             match=r"lack \['padding_mask', 'token_ids'\]")
    rejected(lambda: lm.generate({"token_ids": np.ones((3,), "int32"),
                                  "padding_mask": np.ones((3,), "int32")}), match="batch")
    rejected(lambda: lm.generate({"token_ids": np.ones((1, 3), "int32"),
                                  "padding_mask": np.zeros((1, 3), "int32")}),
             match="empty prompt")
    rejected(lambda: lm.generate(["a", 3]))  # the tokenizer's element check
    rejected(lambda: lm.generate("\ud800"), match="lone surrogate")
    rejected(lambda: lm.predict([]), match="empty")
    rejected(lambda: OPTCausalLM(lm.backbone).generate("the cat"), match="preprocessor")
    assert lm.generate(ok, max_new_tokens=3, stop_token_ids=()) == before
    assert lm.generate(ok, max_new_tokens=np.int64(3), stop_token_ids=()) == before


# -- YOLOv8: detect -----------------------------------------------------------

@pytest.fixture(scope="module")
def yolo():
    from tests.cv.yolov8.test_yolov8_detector import _detector

    detector = _detector(size=32, score_threshold=0.0, max_detections=20)
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype("uint8")
    return detector, image, detector.predict(image)


def test_detector_rejects_bad_images_and_keeps_working(yolo):
    from tests.cv.yolov8.test_yolov8_detector import _same

    detector, image, before = yolo
    for bad in ([], np.zeros((0, 8, 8, 3), "uint8"), None, b"\x89PNG", 5, [None],
                {"images": image}):
        rejected(lambda: detector.predict(bad), InputError)
    bad_arrays = {"boolean": image > 128, "int64": image.astype("int64"),
                  "NaN": np.full((8, 8, 3), np.nan, "float32"),
                  "empty": np.zeros((0, 5, 3), "uint8"),
                  "0-255 floats": image.astype("float32")}
    for bad in bad_arrays.values():
        rejected(lambda: detector.predict(bad), ImageError)
    for size in (0, -2, "8"):
        rejected(lambda: detector.predict(image, batch_size=size), match="batch_size")
    rejected(lambda: detector.fit([], []), match="empty")
    _same(detector.predict(image), before)
    # accepted and handled: a 1-pixel, a grayscale and an RGBA image
    gray, rgba = image[..., 0], np.concatenate([image, image[..., :1]], axis=-1)
    found = detector.predict([np.zeros((1, 1, 3), "uint8"), gray, rgba])
    assert len(found) == 3 and all(f["boxes"].shape[1:] == (4,) for f in found)


# -- Stable Diffusion: text_to_image, image_to_image, inpaint --------------------

@pytest.fixture(scope="module")
def sd():
    from zoo.tokenizers.clip import CLIPTokenizer

    backbone = StableDiffusionBackbone(
        text_encoder=dict(vocabulary_size=49408, hidden_dim=16, num_layers=1, num_heads=2,
                          intermediate_dim=32),
        unet=dict(block_out_channels=(16, 32),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                  num_attention_heads=2, cross_attention_dim=16, norm_num_groups=8),
        vae=dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
        image_size=16)
    return StableDiffusion(backbone, StableDiffusionPreprocessor(CLIPTokenizer.from_open_clip()))


def test_text_to_image_rejects_bad_arguments_before_running_anything(sd):
    # Stable Diffusion runs no Keras loop; every argument is checked before
    # the first component runs, so no compiled function exists afterwards.
    model = sd
    calls = {
        "no prompts": dict(prompt=[]),
        "bytes": dict(prompt=b"a cat"),
        "a number among prompts": dict(prompt=["a", 3]),
        "zero steps": dict(prompt="a", num_steps=0),
        "negative steps": dict(prompt="a", num_steps=-1),
        "NaN guidance": dict(prompt="a", guidance_scale=float("nan")),
        "infinite guidance": dict(prompt="a", guidance_scale=float("inf")),
        "zero batch": dict(prompt="a", batch_size=0),
        "negative batch": dict(prompt="a", batch_size=-1),
        "text batch": dict(prompt="a", batch_size="2"),
        "odd height": dict(prompt="a", height=7),
        "zero width": dict(prompt="a", width=0),
        "text seed": dict(prompt="a", seed="x"),
        "NaN latents": dict(prompt="a", latents=np.full((1, 8, 8, 4), np.nan)),
        "wrong latents": dict(prompt="a", latents=np.zeros((1, 4, 4, 4))),
        "two negatives for one prompt": dict(prompt="a", negative_prompt=["b", "c"]),
        "output type": dict(prompt="a", output_type="png"),
        "unknown scheduler": dict(prompt="a", scheduler="dpm++"),
        "scheduler of another type": dict(prompt="a", scheduler=3),
    }
    for kwargs in calls.values():
        rejected(lambda: model.text_to_image(**{"num_steps": 2, **kwargs}))
    assert model._compiled == {}


def test_image_to_image_and_inpaint_reject_bad_images_and_masks(sd):
    model = sd
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype("uint8")
    for bad in (np.zeros((1, 1, 3), "uint8"), np.full((16, 16, 3), np.nan, "float32"),
                image > 0, image.astype("int64")):
        rejected(lambda: model.image_to_image(bad, "a", num_steps=2), ImageError)
    rejected(lambda: model.image_to_image(image, [], num_steps=2), match="empty")
    for strength in (0.0, 1.5, -1, "0.5", True, float("nan")):
        rejected(lambda: model.image_to_image(image, "a", num_steps=2, strength=strength),
                 match="strength")
    masks = {"wrong size": np.zeros((8, 8)), "NaN": np.full((16, 16), np.nan),
             "int64": np.zeros((16, 16), "int64"), "3 channels": np.zeros((16, 16, 3))}
    for mask in masks.values():
        rejected(lambda: model.inpaint(image, mask, "a", num_steps=2))
    rejected(lambda: model.inpaint(image, None, "a", num_steps=2), ImageError)
    rejected(lambda: model.predict([]), match="empty")
    assert model._compiled == {}


# -- Whisper: transcribe --------------------------------------------------------

# one greedy attempt per window: a random model would otherwise run every
# fallback temperature
GREEDY = TranscribeOptions(temperatures=(0.0,))


@pytest.fixture(scope="module")
def whisper():
    from tests.audio.whisper.test_whisper_fit import tiny_whisper

    model = tiny_whisper()
    tone = (0.1 * np.sin(np.arange(8000) / 5.0)).astype("float32")
    return model, tone, model.transcribe(tone, sampling_rate=16000, options=GREEDY)


def test_transcribe_rejects_bad_audio_and_arguments_and_keeps_working(whisper):
    model, tone, before = whisper
    rejected(lambda: model.transcribe([]), match="no audio")
    rejected(lambda: model.transcribe(None), match="no audio")
    for value in (0, -1, "2"):
        rejected(lambda: model.transcribe(tone, sampling_rate=16000, beam_size=value),
                 match="beam_size")
    rejected(lambda: model.transcribe(tone, sampling_rate=16000, task="summarize"),
             match="task")
    rejected(lambda: model.transcribe(tone, sampling_rate=16000, language="de"),
             match="English-only")
    bad_audio = {"no samples": np.zeros(0, "float32"), "NaN": np.full(800, np.nan, "float32"),
                 "infinite": np.full(800, np.inf, "float32"),
                 "3-D": np.zeros((2, 2, 2), "float32"), "bytes": b"RIFF"}
    for bad in bad_audio.values():
        rejected(lambda: model.transcribe(bad, sampling_rate=16000), AudioError)
    rejected(lambda: model.transcribe(tone), AudioError, match="sampling_rate")
    for options in (TranscribeOptions(temperatures=()), TranscribeOptions(best_of=0)):
        rejected(lambda: model.transcribe(tone, sampling_rate=16000, options=options))
    rejected(lambda: model.predict([]), match="empty")
    assert model.transcribe(tone, sampling_rate=16000, options=GREEDY) == before
    # accepted and handled: one sample, and stereo in either layout
    assert isinstance(model.transcribe(tone[:1], sampling_rate=16000, options=GREEDY)["text"],
                      str)
    stereo = np.stack([tone, 0.5 * tone])
    np.testing.assert_array_equal(load_audio(stereo, 16000), load_audio(stereo.T, 16000))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="backend-independent")
def test_input_error_is_a_value_and_a_type_error():
    assert issubclass(InputError, ZooError)
    assert issubclass(InputError, ValueError) and issubclass(InputError, TypeError)
