"""Word-level timestamps from cross-attention (the alignment heads) and DTW.

A few cross-attention heads of every released Whisper follow the audio
closely (`alignment_heads`, published with each model). Running the decoder
once over `sot_sequence + <|notimestamps|> + text + <|endoftext|>` gives those
heads' attention from each text token to the window's frames; normalised
over tokens, median-filtered over time and averaged over heads, it is a
token-by-frame similarity matrix. Dynamic time warping through it gives each
token's first frame, hence each word's start and end (CTranslate2's `align`
and faster-whisper's word heuristics, which zoo's tests compare against).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from zoo.layers.transformer_decoder import causal_mask

#: timestamp steps per second of audio (the encoder halves 100 frames/s)
TOKENS_PER_SECOND = 50
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"


def attention_and_logits(backbone: Any, head: Any, cross: Any, tokens: list[int],
                         heads: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Cross-attention scores of `heads` `(len(heads), tokens, frames)` (before
    the softmax) and the logits `(tokens, vocabulary)`, for one token row;
    `cross` is the window's `backbone.cross_key_values(...)`."""
    ids = np.asarray([tokens], "int32")
    length = ids.shape[1]
    x = backbone.token_embedding(ids) + backbone.decoder_position_embedding(
        np.arange(length, dtype="int32")[None])
    mask = causal_mask(np.ones((1, length), "int32"), length, length)
    wanted: dict[int, list[int]] = {}
    for layer_index, head_index in heads:
        wanted.setdefault(int(layer_index), []).append(int(head_index))
    scores: dict[tuple[int, int], np.ndarray] = {}
    for index, layer in enumerate(backbone.decoder_layers):
        if index in wanted:
            attention = layer.cross_attention
            hidden, _ = layer._self_attention_block(x, mask, None, None, False)
            q = attention._split_heads(attention.query_dense(
                layer.cross_attention_layer_norm(hidden)))
            keys = cross[index][0]  # (batch, heads, frames, head_dim)
            qk = ops.einsum("btnh,bnsh->bnts", q, keys) / np.sqrt(attention.head_dim)
            qk = np.asarray(ops.convert_to_numpy(ops.cast(qk, "float32")))[0]
            for h in wanted[index]:
                scores[(index, h)] = qk[h]
        x = layer(x, padding_mask=np.ones((1, length), "int32"), cross_key_value=cross[index])
    logits = head(backbone.decoder_layer_norm(x))
    logits = np.asarray(ops.convert_to_numpy(ops.cast(logits, "float32")))[0]
    return np.stack([scores[(int(a), int(b))] for a, b in heads]), logits


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window on the last axis, edges reflected (no repeat)."""
    rank = width // 2
    if x.shape[-1] <= rank:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(rank, rank)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def negative_dtw(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotonic path through `x` `(tokens, frames)` that maximises its sum:
    `(token_indices, frame_indices)` per step."""
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf, "float32")
    trace = np.full((n + 1, m + 1), -1, "int8")
    cost[0, 0] = 0
    gain = -np.asarray(x, "float32")
    # Each cell needs its left, upper and upper-left neighbours only, so a
    # whole anti-diagonal (i + j = d) is computed at once.
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        cost[i, j] = gain[i - 1, j - 1] + np.choose(t, (c0, c1, c2))
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    array = np.asarray(path, "int64").reshape(-1, 2)
    return array[:, 0], array[:, 1]


def find_alignment(backbone: Any, head: Any, cross: Any, tokenizer: Any,
                   sot_sequence: list[int], text_tokens: list[int], num_frames: int,
                   heads: list[list[int]], median_width: int = 7) -> list[dict]:
    """Per word: `{"word", "tokens", "start", "end", "probability"}` (seconds
    from the window's start) for `text_tokens` decoded from one window."""
    if not text_tokens:
        return []
    tokens = sot_sequence + [tokenizer.no_timestamps] + text_tokens + [tokenizer.eot]
    scores, logits = attention_and_logits(backbone, head, cross, tokens, heads)
    start = len(sot_sequence)
    text_logits = logits[start: start + len(text_tokens), : tokenizer.eot]
    text_logits = text_logits - text_logits.max(axis=-1, keepdims=True)
    probs = np.exp(text_logits) / np.exp(text_logits).sum(axis=-1, keepdims=True)
    token_probs = probs[np.arange(len(text_tokens)), text_tokens]
    frames = num_frames // 2
    if frames == 0:
        return []
    w = scores[:, :, :frames]
    w = np.exp(w - w.max(axis=-1, keepdims=True))
    w = w / w.sum(axis=-1, keepdims=True)
    w = (w - w.mean(axis=-2, keepdims=True)) / w.std(axis=-2, keepdims=True)
    matrix = median_filter(w, median_width).mean(axis=0)[start: start + len(text_tokens) + 1]
    text_indices, time_indices = negative_dtw(matrix)
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    return [{"word": word, "tokens": list(toks), "start": float(jump_times[a]),
             "end": float(jump_times[b]),
             "probability": float(np.mean(token_probs[a:b]))}
            for word, toks, a, b in zip(words, word_tokens, boundaries[:-1], boundaries[1:])]


def merge_punctuations(alignment: list[dict]) -> None:
    """Attach opening punctuation to the next word and closing punctuation to
    the previous one (in place)."""
    i, j = len(alignment) - 2, len(alignment) - 1
    while i >= 0:
        before, after = alignment[i], alignment[j]
        if before["word"].startswith(" ") and before["word"].strip() in PREPEND_PUNCTUATIONS:
            after["word"] = before["word"] + after["word"]
            after["tokens"] = before["tokens"] + after["tokens"]
            before["word"], before["tokens"] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        before, after = alignment[i], alignment[j]
        if not before["word"].endswith(" ") and after["word"] in APPEND_PUNCTUATIONS:
            before["word"] = before["word"] + after["word"]
            before["tokens"] = before["tokens"] + after["tokens"]
            after["word"], after["tokens"] = "", []
        else:
            i = j
        j += 1


def add_word_timestamps(segments: list[dict], alignment: list[dict], eot: int,
                        time_offset: float, last_speech: float) -> float:
    """Give each of one window's `segments` its `words` (and refine its start
    and end); returns the end of the last speech. `segments` carry their
    `tokens`; `alignment` is `find_alignment`'s result for all their text."""
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):
        # Words at sentence boundaries are at most twice the median duration.
        for i in range(1, len(alignment)):
            if alignment[i]["end"] - alignment[i]["start"] > longest:
                if alignment[i]["word"] in SENTENCE_END:
                    alignment[i]["end"] = alignment[i]["start"] + longest
                elif alignment[i - 1]["word"] in SENTENCE_END:
                    alignment[i]["start"] = alignment[i]["end"] - longest
    merge_punctuations(alignment)
    index = 0
    for segment in segments:
        text_count = len([t for t in segment["tokens"] if t < eot])
        saved, words = 0, []
        while index < len(alignment) and saved < text_count:
            timing = alignment[index]
            if timing["word"]:
                words.append({"word": timing["word"],
                              "start": round(time_offset + timing["start"], 2),
                              "end": round(time_offset + timing["end"], 2),
                              "probability": timing["probability"]})
            saved += len(timing["tokens"])
            index += 1
        if words:
            first = words[0]
            if first["end"] - last_speech > median * 4 and (
                    first["end"] - first["start"] > longest
                    or (len(words) > 1 and words[1]["end"] - first["start"] > longest * 2)):
                if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
                    boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
                    first["end"] = words[1]["start"] = boundary
                first["start"] = max(0, first["end"] - longest)
            if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
                first["start"] = max(0, min(first["end"] - median, segment["start"]))
            else:
                segment["start"] = first["start"]
            last = words[-1]
            if segment["end"] > last["start"] and segment["end"] + 0.5 < last["end"]:
                last["end"] = max(last["start"] + median, segment["end"])
            else:
                segment["end"] = last["end"]
            last_speech = segment["end"]
        segment["words"] = words
    return last_speech
