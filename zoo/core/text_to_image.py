"""`TextToImage`: latent diffusion from prompts, with img2img and inpainting.

The family supplies a backbone with four components (`text_encoder`,
`unet`, `vae_encoder`, `vae_decoder`), the latent scaling factor and the
default image size; this base runs the pipeline around them:

- prompts -> token ids (the preprocessor's tokenizer) -> text embeddings;
- one denoising step = one compiled function: the UNet sees the
  unconditional and the conditional half as one batch (classifier-free
  guidance), then the scheduler's update, all with fixed shapes, so a run of
  50 steps compiles once;
- random numbers are drawn on the host from `numpy.random.default_rng(seed)`
  in a fixed order (image encoding noise, initial noise, the masked image's
  encoding noise, then one draw per step for ancestral schedulers), so the
  same seed gives the same image on every backend and run;
- latents -> pixels with the VAE decoder, as uint8 (or float in [0, 1]).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from zoo.core.compiled_loop import compile_step
from zoo.core.errors import InputError
from zoo.core.export import ExportGraph
from zoo.core.task import Task, positive_int
from zoo.core.text_to_image_inputs import (
    as_prompt_list,
    check_guidance_scale,
    check_num_steps,
    check_seed,
    prepare_image,
    prepare_mask,
)
from zoo.utils.progress import progress


@dataclasses.dataclass(frozen=True)
class _Mode:
    """What one compiled denoising step does (the compile cache key)."""

    scheduler: str  # repr of the scheduler: its class and config
    guided: bool  # classifier-free guidance: unconditional + conditional batch
    stochastic: bool  # the scheduler consumes noise each step
    inpaint: str  # "" (none), "blend" (4-channel UNet), "concat" (9-channel UNet)


class TextToImage(Task):
    """Base class for latent text-to-image diffusion tasks.

    Subclasses set `backbone_cls` / `preprocessor_cls` and `get_scheduler`
    (their family's scheduler registry), and may set `default_scheduler`.
    Outputs are numpy arrays `(n, height, width, 3)`, uint8 unless
    `output_type="float"` (values in [0, 1]).
    """

    #: the scheduler used when none is given (a name `get_scheduler` knows)
    default_scheduler: str = "pndm"
    #: name or scheduler -> scheduler; set by the family (zoo.core imports no family)
    get_scheduler: Any = None

    def __init__(self, backbone: Any, preprocessor: Any = None, **kwargs: Any) -> None:
        super().__init__(inputs=backbone.input, outputs=backbone.output, **kwargs)
        self.backbone = backbone
        self.preprocessor = preprocessor
        self._compiled: dict[Any, Any] = {}

    # -- components -----------------------------------------------------------
    def _compiled_fn(self, key: Any, build: Any, variables: list) -> Any:
        fn = self._compiled.get(key)
        if fn is None:
            fn = compile_step(build(), variables)
            self._compiled[key] = fn
        return fn

    def _tokenizer(self) -> Any:
        tokenizer = getattr(self.preprocessor, "tokenizer", None)
        if tokenizer is None:
            raise InputError(
                f"{type(self).__name__} needs a tokenizer to read prompts, and this model has "
                "no preprocessor. Fix: load it with from_preset(...), or pass "
                "preprocessor=... when building it.")
        return tokenizer

    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """Text embeddings `(len(prompts), length, hidden)` of the prompts.

        Prompts longer than the text encoder's context are truncated, with a
        warning naming how many tokens were dropped.
        """
        encoded = self._tokenizer().encode(list(prompts))
        ids = encoded["token_ids"]
        lengths = encoded.get("num_tokens")
        if lengths is not None:
            for prompt, n in zip(prompts, np.asarray(lengths)):
                if n > ids.shape[1]:
                    warnings.warn(
                        f"The prompt {prompt[:40]!r}... is {int(n)} tokens long, but the text "
                        f"encoder reads {ids.shape[1]}: the last {int(n) - ids.shape[1]} "
                        "tokens were dropped. Fix: shorten the prompt.", stacklevel=3)
        encoder = self.backbone.text_encoder
        fn = self._compiled_fn("text", lambda: lambda t: encoder(t), encoder.variables)
        return np.asarray(ops.convert_to_numpy(fn(ids.astype("int32"))), "float32")

    def encode_images(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Scaled latents sampled from the VAE posterior of images in [-1, 1]
        `(n, H, W, 3)` -> `(n, H/8, W/8, latent_channels)`."""
        encoder = self.backbone.vae_encoder
        fn = self._compiled_fn("vae_encode", lambda: lambda x: encoder(x), encoder.variables)
        moments = np.asarray(ops.convert_to_numpy(fn(images.astype("float32"))), "float32")
        mean, logvar = np.split(moments, 2, axis=-1)
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        noise = _normal(rng, mean.shape)
        return (mean + std * noise) * self.backbone.latent_scaling_factor

    def decode_latents(self, latents: np.ndarray) -> np.ndarray:
        """Images in [0, 1] `(n, 8h, 8w, 3)` from scaled latents `(n, h, w, c)`."""
        decoder = self.backbone.vae_decoder
        scale = self.backbone.latent_scaling_factor
        fn = self._compiled_fn("vae_decode", lambda: lambda z: decoder(z / scale),
                               decoder.variables)
        images = np.asarray(ops.convert_to_numpy(fn(latents.astype("float32"))), "float32")
        return np.clip(images / 2 + 0.5, 0.0, 1.0)

    def export_graphs(self) -> list[ExportGraph]:
        """`text_encoder`, `unet` and `vae_decoder`: the three networks a
        sampling loop runs (the scheduler and classifier-free guidance are the
        caller's, as in diffusers' ONNX pipelines)."""
        bb = self.backbone
        text, unet = bb.text_encoder, bb.unet
        context = ((None, text.max_sequence_length, unet.cross_attention_dim), "float32")
        scale = bb.latent_scaling_factor

        def decode(latents: Any) -> dict[str, Any]:
            images = bb.vae_decoder(latents / scale)
            return {"images": ops.clip(images / 2 + 0.5, 0.0, 1.0)}

        return [
            ExportGraph("text_encoder", {"token_ids": (
                (None, text.max_sequence_length), "int32")},
                lambda token_ids: {"context": text(token_ids)},
                "CLIP token ids (padded to the context length) -> the UNet's text context."),
            ExportGraph("unet", {"latents": ((None, None, None, unet.in_channels), "float32"),
                                 "timesteps": ((None,), "float32"), "context": context},
                        lambda latents, timesteps, context: {
                            "noise_pred": unet(latents, timesteps, context)},
                        "Noisy latents (height and width multiples of 8), one timestep per row "
                        "and the text context -> the predicted noise."),
            ExportGraph("vae_decoder", {"latents": (
                (None, None, None, bb.latent_channels), "float32")}, decode,
                f"Latents as the sampler holds them (scaled by {scale}) -> RGB images in "
                "[0, 1], 8 pixels per latent."),
        ]

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side (8 for SD)."""
        return int(self.backbone.vae_scale_factor)

    # -- the denoising step ---------------------------------------------------
    def _step_fn(self, scheduler: Any, mode: _Mode) -> Any:
        unet = self.backbone.unet

        def step(latents: Any, state: Any, i: Any, timesteps: Any, table: Any, context: Any,
                 guidance: Any, noise: Any, extras: Any) -> Any:
            row = ops.take(table, i, axis=0)
            x = scheduler.scale_model_input(latents, row)
            if mode.inpaint == "concat":
                x = ops.concatenate([x, extras["mask"], extras["masked_latents"]], axis=-1)
            if mode.guided:
                x = ops.concatenate([x, x], axis=0)
            t = ops.full((ops.shape(x)[0],), ops.take(timesteps, i), dtype="float32")
            # Guidance and the scheduler run in float32 whatever the UNet's dtype.
            eps = ops.cast(unet(x, t, context), "float32")
            if mode.guided:
                uncond, cond = ops.split(eps, 2, axis=0)
                eps = uncond + guidance * (cond - uncond)
            latents, state = scheduler.step(eps, latents, state, row,
                                            noise if mode.stochastic else None)
            if mode.inpaint == "blend":
                a, b = ops.unstack(ops.take(extras["blend"], i, axis=0), 2)
                known = a * extras["image_latents"] + b * extras["noise"]
                latents = (1.0 - extras["mask"]) * known + extras["mask"] * latents
            return latents, state

        return step

    def _denoise(self, latents: np.ndarray, context: np.ndarray, scheduler: Any,
                 schedule: Any, guidance_scale: float, rng: np.random.Generator,
                 extras: dict[str, np.ndarray], inpaint: str = "") -> np.ndarray:
        guided = guidance_scale > 1.0
        mode = _Mode(repr(scheduler), guided, bool(scheduler.stochastic), inpaint)
        unet = self.backbone.unet
        fn = self._compiled_fn(("denoise", mode), lambda: self._step_fn(scheduler, mode),
                               unet.variables)
        state = keras.tree.map_structure(
            lambda s: np.asarray(ops.convert_to_numpy(s)), scheduler.initial_state(
                ops.convert_to_tensor(latents)))
        timesteps = schedule.timesteps.astype("float32")
        table = schedule.table.astype("float32")
        guidance = np.asarray(guidance_scale, "float32")
        x: Any = latents.astype("float32")
        context = context.astype("float32")  # the UNet casts to its own dtype
        # (torch.jit.trace cannot take an empty dict as an input)
        extras = {k: v.astype("float32") for k, v in extras.items()} or {
            "none": np.zeros((), "float32")}
        n = len(timesteps)
        for i in progress(range(n), desc="Denoising", total=n, unit="step"):
            noise = (_normal(rng, latents.shape) if mode.stochastic
                     else np.zeros((), "float32"))
            x, state = fn(x, state, np.asarray(i, "int32"), timesteps, table, context,
                          guidance, noise, extras)
        return np.asarray(ops.convert_to_numpy(x), "float32")

    # -- public API -------------------------------------------------------------
    def _scheduler(self, scheduler: Any) -> Any:
        if self.get_scheduler is None:
            raise NotImplementedError(f"{type(self).__name__} sets no get_scheduler.")
        return self.get_scheduler(self.default_scheduler if scheduler is None else scheduler)

    def _contexts(self, prompts: list[str], negative: list[str] | None, per_prompt: int,
                  guided: bool) -> np.ndarray:
        cond = np.repeat(self.encode_prompts(prompts), per_prompt, axis=0)
        if not guided:
            return cond
        uncond = np.repeat(self.encode_prompts(negative or [""] * len(prompts)), per_prompt,
                           axis=0)
        return np.concatenate([uncond, cond], axis=0)

    def _finish(self, latents: np.ndarray, output_type: str) -> np.ndarray:
        images = self.decode_latents(latents)
        if output_type == "float":
            return images
        return np.round(images * 255.0).astype("uint8")

    def _setup(self, prompt: Any, negative_prompt: Any, num_steps: int, output_type: str,
               guidance_scale: Any, seed: Any, batch_size: Any
               ) -> tuple[list[str], list[str] | None]:
        """Check every argument of a call before any model runs (`InputError`);
        return the prompts and negative prompts as lists."""
        check_num_steps(num_steps)
        check_guidance_scale(guidance_scale)
        check_seed(seed)
        positive_int(batch_size, "batch_size", 1)
        if output_type not in ("uint8", "float"):
            raise InputError(f"output_type={output_type!r} is not 'uint8' or 'float'. Fix: "
                             "pass one of them.")
        prompts = as_prompt_list(prompt, "prompt")
        negative = None
        if negative_prompt is not None:
            negative = as_prompt_list(negative_prompt, "negative_prompt")
            if len(negative) == 1 and len(prompts) > 1:
                negative = negative * len(prompts)
            if len(negative) != len(prompts):
                raise InputError(
                    f"Got {len(prompts)} prompts but {len(negative)} negative prompts. Fix: "
                    "pass one negative prompt, or one per prompt.")
        return prompts, negative

    def text_to_image(self, prompt: str | Sequence[str], negative_prompt: Any = None,
                      num_steps: int = 50, guidance_scale: float = 7.5,
                      seed: int | None = None, batch_size: int = 1, scheduler: Any = None,
                      height: int | None = None, width: int | None = None,
                      latents: np.ndarray | None = None, output_type: str = "uint8",
                      ) -> np.ndarray:
        """Generate images from prompts.

        Args:
            prompt: a prompt or a list of prompts ("" is unconditional).
            negative_prompt: what to steer away from (one, or one per prompt).
            num_steps: denoising steps (a positive int).
            guidance_scale: classifier-free guidance weight; <= 1 turns it off.
            seed: seed of every random draw; the same seed gives the same images.
            batch_size: images per prompt.
            scheduler: a scheduler name ("pndm", "ddim", "euler",
                "euler_ancestral", "dpmpp_2m", ... with "_karras" variants)
                or instance; default: the family's.
            height, width: output size in pixels, multiples of 8 (default:
                the model's native size).
            latents: unit-variance initial noise `(n, height/8, width/8,
                channels)` to use instead of drawing it (it is scaled by the
                scheduler's initial sigma, as diffusers does).
            output_type: "uint8" (default) or "float" (values in [0, 1]).

        Returns:
            `(len(prompts) * batch_size, height, width, 3)` images.
        """
        prompts, negative = self._setup(prompt, negative_prompt, num_steps, output_type,
                                        guidance_scale, seed, batch_size)
        scheduler = self._scheduler(scheduler)
        schedule = scheduler.schedule(num_steps)
        rng = np.random.default_rng(seed)
        size = self._size(height, width)
        n = len(prompts) * int(batch_size)
        f = self.vae_scale_factor
        shape = (n, size[0] // f, size[1] // f, self.backbone.latent_channels)
        noise = _normal(rng, shape) if latents is None else _check_latents(latents, shape)
        context = self._contexts(prompts, negative, int(batch_size), guidance_scale > 1.0)
        x = self._denoise(noise * schedule.init_noise_sigma, context, scheduler, schedule,
                          guidance_scale, rng, {})
        return self._finish(x, output_type)

    def image_to_image(self, image: Any, prompt: str | Sequence[str],
                       negative_prompt: Any = None, strength: float = 0.8,
                       num_steps: int = 50, guidance_scale: float = 7.5,
                       seed: int | None = None, batch_size: int = 1, scheduler: Any = None,
                       output_type: str = "uint8") -> np.ndarray:
        """Redraw an image following prompts (SDEdit): noise it to `strength`, denoise.

        Args:
            image: a path, PIL image or array (any RGB-convertible image); its
                size is rounded down to a multiple of 8 (Lanczos resize), and
                sets the output size.
            prompt, negative_prompt, num_steps, guidance_scale, seed,
                batch_size, scheduler, output_type: as in `text_to_image`.
            strength: in (0, 1]: how much noise is added (1: the image only
                seeds the noise); `int(num_steps * strength)` steps run.

        Returns:
            `(len(prompts) * batch_size, height, width, 3)` images.
        """
        prompts, negative = self._setup(prompt, negative_prompt, num_steps, output_type,
                                        guidance_scale, seed, batch_size)
        scheduler = self._scheduler(scheduler)
        schedule = scheduler.schedule(num_steps, strength=strength)
        rng = np.random.default_rng(seed)
        pixels = prepare_image(image, factor=self.vae_scale_factor)[None]
        n = len(prompts) * int(batch_size)
        image_latents = np.repeat(self.encode_images(pixels, rng), n, axis=0)
        noise = _normal(rng, image_latents.shape)
        a, b = schedule.noise_coefficients[0]
        context = self._contexts(prompts, negative, int(batch_size), guidance_scale > 1.0)
        x = self._denoise(a * image_latents + b * noise, context, scheduler, schedule,
                          guidance_scale, rng, {})
        return self._finish(x, output_type)

    def inpaint(self, image: Any, mask: Any, prompt: str | Sequence[str],
                negative_prompt: Any = None, strength: float = 1.0, num_steps: int = 50,
                guidance_scale: float = 7.5, seed: int | None = None, batch_size: int = 1,
                scheduler: Any = None, output_type: str = "uint8") -> np.ndarray:
        """Repaint the masked part of an image following prompts.

        With a 9-channel (inpainting) UNet the mask and the masked image are
        model inputs; with a regular 4-channel UNet the unmasked region is
        re-noised from the image after every step (diffusers' behaviour).

        Args:
            image: the image (as in `image_to_image`; rounded down to a
                multiple of 8, and the mask with it; sets the output size).
            mask: same height and width as `image`; white / 1 / True marks
                what to repaint (a path, PIL image, or 2-D / (H, W, 1) array,
                bool, uint8 or float in [0, 1]); binarized at 0.5.
            strength: in (0, 1]; 1 (default) ignores the masked pixels' content.
            prompt, negative_prompt, num_steps, guidance_scale, seed,
                batch_size, scheduler, output_type: as in `text_to_image`.

        Returns:
            `(len(prompts) * batch_size, height, width, 3)` images.
        """
        prompts, negative = self._setup(prompt, negative_prompt, num_steps, output_type,
                                        guidance_scale, seed, batch_size)
        f = self.vae_scale_factor
        pixels, original_size = prepare_image(image, return_original_size=True, factor=f)
        binary = prepare_mask(mask, original_size, pixels.shape[:2])
        scheduler = self._scheduler(scheduler)
        schedule = scheduler.schedule(num_steps, strength=strength)
        rng = np.random.default_rng(seed)
        n = len(prompts) * int(batch_size)
        channels = self.backbone.latent_channels
        concat = self.backbone.unet.in_channels == 2 * channels + 1
        full = strength >= 1.0
        image_latents = None
        if not concat or not full:
            image_latents = np.repeat(self.encode_images(pixels[None], rng), n, axis=0)
        noise = _normal(rng, (n, pixels.shape[0] // f, pixels.shape[1] // f, channels))
        if full:
            x = noise * schedule.init_noise_sigma
        else:
            a, b = schedule.noise_coefficients[0]
            x = a * image_latents + b * noise
        masked = pixels * (binary[..., None] < 0.5)
        masked_latents = np.repeat(self.encode_images(masked[None], rng), n, axis=0)
        latent_mask = np.repeat(binary[None, ::f, ::f, None], n, axis=0)
        guided = guidance_scale > 1.0
        if concat:
            extras = {"mask": latent_mask, "masked_latents": masked_latents}
            mode = "concat"
        else:
            blend = np.concatenate([schedule.noise_coefficients[1:], [[1.0, 0.0]]], axis=0)
            extras = {"mask": latent_mask, "image_latents": image_latents, "noise": noise,
                      "blend": blend.astype("float32")}
            mode = "blend"
        context = self._contexts(prompts, negative, int(batch_size), guided)
        x = self._denoise(x, context, scheduler, schedule, guidance_scale, rng, extras, mode)
        return self._finish(x, output_type)

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        size, f = int(self.backbone.image_size), self.vae_scale_factor
        height = size if height is None else height
        width = size if width is None else width
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                   and v % f == 0 for v in (height, width)):
            raise InputError(f"height={height} and width={width} must be positive multiples "
                             f"of {f} (the VAE downsamples by {f}). Fix: round them, e.g. "
                             f"{size}.")
        return int(height), int(width)


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard normal float32 noise, drawn in float64 (the documented draw order)."""
    return rng.standard_normal(shape).astype("float32")


def _check_latents(latents: np.ndarray, shape: tuple) -> np.ndarray:
    latents = np.asarray(latents, "float32")
    if latents.shape != shape:
        raise InputError(f"latents have shape {latents.shape}, expected {shape} "
                         "(images, height / 8, width / 8, latent channels). Fix: draw them "
                         "with that shape.")
    if not np.isfinite(latents).all():
        raise InputError("latents hold NaN or infinite values. Fix: pass finite noise, e.g. "
                         "np.random.default_rng(0).standard_normal(shape).")
    return latents
