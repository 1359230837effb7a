"""safediffusion: SafeDiffusion-R1 — GRPO safety post-training of text-to-image diffusion models."""

__version__ = "0.1.0"
