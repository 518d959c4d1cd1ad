"""`WhisperAudioToText`: speech to text (and timestamps) with a Whisper backbone."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo.audio.whisper.whisper_audio_to_text_preprocessor import WhisperAudioToTextPreprocessor
from zoo.audio.whisper.whisper_backbone import WhisperBackbone
from zoo.audio.whisper.whisper_decoding import SpecialTokens, WhisperDecoder
from zoo.audio.whisper.whisper_transcribe import (
    FRAMES_PER_SECOND,
    RecordingLoop,
    TranscribeOptions,
    transcribe_batch,
)
from zoo.core.errors import InputError
from zoo.core.export import ExportGraph
from zoo.core.task import Task, positive_int
from zoo.layers.tied_logits import TiedLogits
from zoo.utils.audio import SAMPLING_RATE, load_audio
from zoo.utils.vad import Chunk, VadOptions, model_path, speech_chunks


@keras.saving.register_keras_serializable(package="zoo")
class WhisperAudioToText(Task):
    """Whisper speech recognition: `transcribe(audio)` returns text and segments.

    As a Keras model it maps the backbone's inputs to next-token logits
    `(batch, length, vocabulary_size)` (the LM head is the tied token
    embedding), so `fit` on `(audio, transcripts)` fine-tunes it.

    Args:
        backbone: a `WhisperBackbone`.
        preprocessor: a `WhisperAudioToTextPreprocessor` (audio converter and
            tokenizer); needed by `transcribe` and by `fit` on raw audio.
        alignment_heads: `(layer, head)` pairs of cross-attention heads that
            follow the audio (word-level timing), as released with the model.

    Example:

    >>> from zoo.models import WhisperAudioToText
    >>> whisper = WhisperAudioToText.from_preset("whisper_tiny_en")  # doctest: +SKIP
    >>> whisper.transcribe("speech.wav")["text"]  # doctest: +SKIP
    ' The quick brown fox jumps over the lazy dog.'
    """

    backbone_cls = WhisperBackbone
    preprocessor_cls = WhisperAudioToTextPreprocessor

    def __init__(self, backbone: WhisperBackbone,
                 preprocessor: WhisperAudioToTextPreprocessor | None = None,
                 alignment_heads: Sequence[Sequence[int]] | None = None,
                 **kwargs: Any) -> None:
        head = TiedLogits(backbone.token_embedding, dtype=backbone.dtype_policy, name="lm_head")
        inputs = backbone.input
        outputs = head(backbone(inputs)["decoder_sequence_output"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.lm_head = head
        self.alignment_heads = [list(map(int, h)) for h in alignment_heads or []]
        self._decoder: WhisperDecoder | None = None
        self.compile(
            optimizer=keras.optimizers.Adam(1e-5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    def logits_from_hidden(self, hidden: Any, head_inputs: tuple = ()) -> Any:
        """Logits from decoder hidden states (the tied embedding); `head_inputs`
        is `lm_head.inference_weights()` during decoding (a faster layout of
        the embedding on torch)."""
        return self.lm_head(hidden, *head_inputs)

    def export_graphs(self) -> list[ExportGraph]:
        """`encoder` (log-mel features -> encoder output and every decoder
        layer's cross-attention keys and values) and `decoder_step` (new
        tokens against the self-attention cache -> logits and the updated
        cache), what the decoding loop runs."""
        bb = self.backbone
        layers, heads, head_dim = bb.num_decoder_layers, bb.num_heads, bb.hidden_dim // bb.num_heads
        # keys of layer i at 2i, values at 2i + 1 (LiteRT slices at most 5-D tensors)
        kv = ((2 * layers, None, heads, None, head_dim), "float32")

        def encoder(encoder_features: Any) -> dict[str, Any]:
            output = bb.encode(encoder_features)
            pairs = bb.cross_key_values(output)
            return {"encoder_output": output,
                    "cross_key_values": ops.stack([t for pair in pairs for t in pair])}

        def decoder_step(token_ids: Any, padding_mask: Any, cache: Any, cross_key_values: Any,
                         cache_update_index: Any) -> dict[str, Any]:
            pairs = [(cache[2 * i], cache[2 * i + 1]) for i in range(layers)]
            cross = [(cross_key_values[2 * i], cross_key_values[2 * i + 1])
                     for i in range(layers)]
            hidden, updated = bb.call_decoder_with_cache(token_ids, padding_mask, pairs, cross,
                                                         cache_update_index)
            return {"logits": self.logits_from_hidden(hidden),
                    "new_cache": ops.stack([t for pair in updated for t in pair])}

        return [
            ExportGraph("encoder", {"encoder_features": (
                (None, bb.num_mels, 2 * bb.max_encoder_sequence_length), "float32")}, encoder,
                "Log-mel features (WhisperAudioConverter, 30 s windows) -> encoder output and "
                "cross_key_values (2 * layers: keys of layer i at 2i, values at 2i + 1; batch, "
                "heads, frames, head_dim)."),
            ExportGraph("decoder_step", {
                "token_ids": ((None, None), "int32"), "padding_mask": ((None, None), "int32"),
                "cache": kv, "cross_key_values": kv, "cache_update_index": ((), "int32")},
                decoder_step,
                "Tokens at positions cache_update_index... -> their logits and new_cache, the cache with "
                "their keys and values written. Start from a zero cache (2 * layers, batch, "
                "heads, max_length, head_dim); padding_mask (batch, max_length) is 1 at every "
                "position written so far or now."),
        ]

    # -- decoding -------------------------------------------------------------
    def _tokenizer(self) -> Any:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if tokenizer is None:
            raise InputError(
                "transcribe() needs a tokenizer, and this model has no preprocessor. Fix: "
                "load it with WhisperAudioToText.from_preset(...) from a preset that has "
                "one, or pass preprocessor=WhisperAudioToTextPreprocessor(...).")
        return tokenizer

    def decoder(self) -> WhisperDecoder:
        """The compiled encode/decode steps (built once)."""
        if self._decoder is None:
            tok = self._tokenizer()
            specials = [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.no_speech]
            sot_lm = tok.backend.token_to_id("<|startoflm|>")
            if sot_lm is not None:
                specials.append(sot_lm)
            blank = tok.backend.token_to_id("Ġ")
            self._decoder = WhisperDecoder(self, SpecialTokens(
                eot=tok.eot, no_timestamps=tok.no_timestamps,
                timestamp_begin=tok.timestamp_begin, no_speech=tok.no_speech,
                vocabulary_size=self.backbone.vocabulary_size,
                suppress=tuple(sorted(set(tok.non_speech_tokens()) | set(specials))),
                suppress_begin=tuple(t for t in (blank, tok.eot) if t is not None)))
        return self._decoder

    def detect_language(self, audio: Any, sampling_rate: int | None = None
                        ) -> tuple[str, dict[str, float]]:
        """The most likely language of the first 30 s, and every language's probability.

        Raises:
            ValueError: the model is English-only.
        """
        tok = self._tokenizer()
        if not tok.is_multilingual:
            raise InputError("This Whisper model is English-only; it has no language "
                             "detection. Fix: use a multilingual preset such as whisper_tiny.")
        features = self.preprocessor.audio_converter(
            load_audio(audio, sampling_rate), sampling_rate=SAMPLING_RATE)
        return self._detect(self.decoder().encode(features))

    def _detect(self, cross: Any) -> tuple[str, dict[str, float]]:
        tok = self._tokenizer()
        backbone = self.backbone
        mask = np.ones((1, 1), "int32")
        hidden, _ = backbone.call_decoder_with_cache(
            np.array([[tok.sot]], "int32"), mask, backbone.init_cache(1, 1), cross, 0)
        logits = np.asarray(ops.convert_to_numpy(
            ops.cast(self.logits_from_hidden(hidden[:, -1, :]), "float32")))[0]
        codes = list(tok.language_tokens)
        ids = [tok.language_tokens[c] for c in codes]
        picked = logits[ids] - logits[ids].max()
        probs = np.exp(picked) / np.exp(picked).sum()
        ranked = dict(sorted(zip(codes, probs.tolist()), key=lambda kv: -kv[1]))
        return next(iter(ranked)), ranked

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        beam_size: int = 1,
        word_timestamps: bool = False,
        sampling_rate: int | None = None,
        initial_prompt: str | None = None,
        options: TranscribeOptions | None = None,
        batch_size: int | None = None,
        vad: bool | str = False,
        vad_options: VadOptions | None = None,
    ) -> dict | list[dict]:
        """Transcribe (or translate into English) speech of any length.

        Args:
            audio: a file path (wav, flac, mp3, ogg), a numpy array of
                samples with `sampling_rate` (any rate, int or float, mono or
                stereo), or a list of those.
            language: a language code (`"en"`, `"de"`...); None detects it
                on multilingual models (English-only models use English).
            task: `"transcribe"`, or `"translate"` into English.
            beam_size: 1: greedy decoding; more: beam search with this many
                beams (at temperature 0; fallback temperatures sample).
            word_timestamps: add each segment's `words` (`{"word", "start",
                "end", "probability"}`), aligned through the cross-attention of
                the model's alignment heads.
            sampling_rate: the sample rate of array inputs.
            initial_prompt: text that precedes the audio (style, names).
            options: window-loop settings (`TranscribeOptions`).
            batch_size: recordings (or, with `vad`, speech chunks) decoded
                together: each round encodes one window of up to this many in
                one call and decodes them greedily in one loop, each row
                stopping at its own end; one that ends frees its row for the
                next. Every recording takes the decisions it takes alone
                (same text at temperature 0); windows that need a fallback
                temperature, beam search or word timestamps go on one at a
                time. None: 8 with `vad`, else 1.
            vad: find speech first (Silero VAD, `zoo.utils.vad`; needs
                `pip install "zoo[vad]"`) and skip the silence. `True` (or
                `"filter"`): the speech, silence between it removed, goes
                through the usual window loop (each window conditioned on the
                text before it), as faster-whisper's `vad_filter`. `"chunks"`:
                the speech packed into chunks of at most 30 s, each
                transcribed on its own and batched, so that one long
                recording fills a batch too (faster-whisper's batched
                pipeline); faster, and without the previous text as context.
                Segment and word times are times in the recording either
                way; a recording without speech gives empty text.
            vad_options: thresholds and padding of the VAD (`VadOptions`).

        Returns:
            Per input `{"text", "language", "segments": [{"start", "end",
            "text", ...}]}`; a list when `audio` is a list.
        """
        # Every argument is checked before any audio is decoded or model run.
        beam_size = positive_int(beam_size, "beam_size", 5)
        if task not in ("transcribe", "translate"):
            raise InputError(f"task must be 'transcribe' or 'translate', got {task!r}. Fix: "
                             "pass one of them.")
        tok = self._tokenizer()
        if not tok.is_multilingual and language not in (None, "en"):
            raise InputError(f"This Whisper model is English-only; language={language!r} is "
                             "not possible. Fix: leave language=None or use a multilingual "
                             "preset.")
        if language is not None:
            tok.sot_sequence(language, task, timestamps=True)  # an unknown code raises here
        if audio is None or (isinstance(audio, (list, tuple)) and not audio):
            raise InputError(f"Got no audio ({audio!r}). Fix: pass a file path, a numpy array "
                             "of samples with sampling_rate=..., or a non-empty list of them.")
        single = not isinstance(audio, (list, tuple))
        inputs = [audio] if single else list(audio)
        options = dataclasses.replace(options or TranscribeOptions(), beam_size=beam_size,
                                      word_timestamps=bool(word_timestamps))
        if vad not in (False, True, "filter", "chunks"):
            raise InputError(f"vad must be False, True, 'filter' or 'chunks', got {vad!r}. "
                             "Fix: vad=True skips silence; vad='chunks' also batches the "
                             "speech of one recording.")
        if batch_size is None:
            batch_size = 8 if vad == "chunks" else 1
        batch_size = positive_int(batch_size, "batch_size", 8)
        if vad_options is not None and not isinstance(vad_options, VadOptions):
            raise InputError(f"vad_options must be a zoo.utils.vad.VadOptions, got "
                             f"{type(vad_options).__name__}. Fix: VadOptions(threshold=...).")
        if vad:
            model_path()  # no onnxruntime or model: one clear error before any work
        prompt = tok.tokenize(" " + initial_prompt.strip()) if initial_prompt else []
        from zoo.utils.progress import progress_bar

        languages: list[dict[str, str]] = [{} for _ in inputs]
        owners: list[tuple[int, Chunk | None]] = []  # each loop's recording (and chunk)
        with progress_bar(total=None, desc="Transcribing", unit="s") as bar:
            def loops() -> Any:  # each recording is read when a row is free for it
                for k, a in enumerate(inputs):
                    samples = load_audio(a, sampling_rate)
                    pieces = ([None] if not vad else speech_chunks(
                        samples, vad_options, 30.0 if vad == "chunks" else None))
                    for chunk in pieces:
                        owners.append((k, chunk))
                        audio = samples if chunk is None else chunk.audio(samples)
                        yield self._recording_loop(audio, language, task, prompt, options,
                                                   languages[k], bar)

            all_segments = transcribe_batch(self.decoder(), loops(), batch_size)
        per_recording: list[list[dict]] = [[] for _ in inputs]
        for (k, chunk), segments in zip(owners, all_segments):
            per_recording[k].extend(segments if chunk is None else
                                    [_in_recording(s, chunk) for s in segments])
        keep = ("start", "end", "text", "avg_logprob", "no_speech_prob", "temperature", "words")
        results = [{
            "text": "".join(s["text"] for s in segments),
            "language": (language or detected.get("language")
                         or ("en" if not tok.is_multilingual else None)),
            "segments": [{k: s[k] for k in keep if k in s} for s in segments],
        } for segments, detected in zip(per_recording, languages)]
        return results[0] if single else results

    def _recording_loop(self, samples: np.ndarray, language: str | None, task: str,
                        prompt: list[int], options: TranscribeOptions,
                        detected: dict[str, str], bar: Any) -> RecordingLoop:
        """The window loop of one recording (`detected` receives its language
        when it is detected)."""
        tok = self._tokenizer()
        converter = self.preprocessor.audio_converter
        hop = SAMPLING_RATE // FRAMES_PER_SECOND
        mel = converter.log_mel(np.pad(samples.astype("float32"), (0, hop)))
        content_frames = mel.shape[-1] - 1
        if hasattr(bar, "refresh"):  # a tqdm bar: the total grows as recordings are read
            bar.total = (bar.total or 0) + round(content_frames / FRAMES_PER_SECOND, 2)
            bar.refresh()

        def sot_sequence(cross: Any) -> list[int]:
            if not tok.is_multilingual:
                return tok.sot_sequence(None, task, timestamps=True)
            if language is None and "language" not in detected:
                detected["language"] = self._detect(cross)[0]
            return tok.sot_sequence(language or detected["language"], task, timestamps=True)

        return RecordingLoop(self.decoder(), mel, content_frames, sot_sequence, tok, options,
                             prompt, on_progress=lambda f: bar.update(f / FRAMES_PER_SECOND))

    def get_config(self) -> dict:
        return {**super().get_config(), "alignment_heads": self.alignment_heads}


def _in_recording(segment: dict, chunk: Chunk) -> dict:
    """A segment of a VAD chunk with its (and its words') times in the recording."""
    def moved(item: dict) -> dict:
        return {**item, "start": round(chunk.recording_time(item["start"]), 3),
                "end": round(chunk.recording_time(item["end"], is_end=True), 3)}

    out = moved(segment)
    if "words" in segment:
        out["words"] = [moved(w) for w in segment["words"]]
    return out
