"""Stable Diffusion catalog entries (data only). Parameter counts are what the
converted backbone's `count_params()` reports: CLIP text encoder 123,060,480
+ UNet 859,520,964 + VAE 83,653,863 (the same as diffusers' components)."""

_PARAMS = 1_066_235_307


def _entry(description: str, sources: list[str]) -> dict:
    return {"family": "stable_diffusion", "description": description, "params": _PARAMS,
            "sources": sources, "license": "CreativeML Open RAIL-M"}


PRESETS = {
    "stable_diffusion_v1_5": _entry(
        "Stable Diffusion v1.5 (512x512): CLIP ViT-L/14 text encoder, UNet and VAE, from the "
        "diffusers folder.", ["hf://stable-diffusion-v1-5/stable-diffusion-v1-5"]),
    "stable_diffusion_v1_4": _entry(
        "Stable Diffusion v1.4 (512x512), from the diffusers folder.",
        ["hf://CompVis/stable-diffusion-v1-4"]),
}
