"""`StableDiffusionBackbone`: CLIP text encoder, UNet and VAE in one preset."""

from __future__ import annotations

from typing import Any

import keras

from zoo.core.backbone import Backbone
from zoo.diffusion.stable_diffusion.clip_text_encoder import CLIPTextEncoder
from zoo.diffusion.stable_diffusion.unet import UNet
from zoo.diffusion.stable_diffusion.vae import VAEDecoder, VAEEncoder

#: SD v1's VAE latent scaling factor (latents are divided by it before decoding)
SD_V1_SCALING_FACTOR = 0.18215


@keras.saving.register_keras_serializable(package="zoo")
class StableDiffusionBackbone(Backbone):
    """The four networks of a latent diffusion model, as one functional model.

    The components are reachable as attributes (`text_encoder`, `unet`,
    `vae_encoder`, `vae_decoder`); `StableDiffusion` calls each on its own.
    As a Keras model the backbone maps

    - `token_ids` `(B, 77)` -> `text_embeddings` `(B, 77, hidden)`,
    - `latents` `(B, h, w, unet in_channels)`, `timesteps` `(B,)` and
      `context` `(B, L, hidden)` -> `noise_pred` `(B, h, w, latent_channels)`,
    - `images` `(B, H, W, 3)` in [-1, 1] -> `latent_moments` `(B, H/8, W/8, 2c)`,
    - `image_latents` `(B, h, w, c)` (unscaled) -> `decoded_images` `(B, 8h, 8w, 3)`.

    Args:
        text_encoder: `CLIPTextEncoder` arguments (default: SD v1's ViT-L/14 text tower).
        unet: `UNet` arguments (default: SD v1's).
        vae: `VAEEncoder` / `VAEDecoder` arguments (default: SD v1's).
        latent_scaling_factor: latents are multiplied by it after encoding
            and divided by it before decoding (0.18215 for SD v1).
        image_size: the native resolution in pixels (512 for SD v1).
        dtype: dtype policy of every component (e.g. "bfloat16").

    Example:

    >>> from zoo.models import StableDiffusionBackbone
    >>> tiny = StableDiffusionBackbone(  # doctest: +SKIP
    ...     text_encoder={"hidden_dim": 32, "num_layers": 1, "num_heads": 2,
    ...                   "intermediate_dim": 64},
    ...     unet={"block_out_channels": [32, 64], "cross_attention_dim": 32, ...},
    ...     vae={"block_out_channels": [32, 64]})
    """

    #: `quantize` leaves the VAE (pixels in, pixels out) in float
    quantized_parts = ("text_encoder/", "unet/")

    def __init__(self, text_encoder: dict | None = None, unet: dict | None = None,
                 vae: dict | None = None, latent_scaling_factor: float = SD_V1_SCALING_FACTOR,
                 image_size: int = 512, dtype: Any = None, **kwargs: Any) -> None:
        text_encoder = dict(text_encoder or {})
        unet = dict(unet or {})
        vae = dict(vae or {})
        text_layer = CLIPTextEncoder(**text_encoder, dtype=dtype, name="text_encoder")
        unet_layer = UNet(**unet, dtype=dtype, name="unet")
        encoder = VAEEncoder(**vae, dtype=dtype, name="vae_encoder")
        decoder = VAEDecoder(**vae, dtype=dtype, name="vae_decoder")
        latent_channels = int(encoder.latent_channels)
        inputs = {
            "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
            "latents": keras.Input((None, None, unet_layer.in_channels), name="latents"),
            "timesteps": keras.Input((), dtype="float32", name="timesteps"),
            "context": keras.Input((None, unet_layer.cross_attention_dim), name="context"),
            "images": keras.Input((None, None, 3), name="images"),
            "image_latents": keras.Input((None, None, latent_channels), name="image_latents"),
        }
        outputs = {
            "text_embeddings": text_layer(inputs["token_ids"]),
            "noise_pred": unet_layer(inputs["latents"], inputs["timesteps"], inputs["context"]),
            "latent_moments": encoder(inputs["images"]),
            "decoded_images": decoder(inputs["image_latents"]),
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.text_encoder = text_layer
        self.unet = unet_layer
        self.vae_encoder = encoder
        self.vae_decoder = decoder
        self.text_encoder_config = text_encoder
        self.unet_config = unet
        self.vae_config = vae
        self.latent_scaling_factor = float(latent_scaling_factor)
        self.image_size = int(image_size)
        self.latent_channels = latent_channels
        #: pixels per latent along each side: the VAE halves the size per level
        self.vae_scale_factor = 2 ** (len(encoder.block_out_channels) - 1)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({
            "text_encoder": self.text_encoder_config,
            "unet": self.unet_config,
            "vae": self.vae_config,
            "latent_scaling_factor": self.latent_scaling_factor,
            "image_size": self.image_size,
        })
        return config
