"""Diffusion models: Stable Diffusion and its noise schedulers."""
