"""Pretraining of the miniature world's models: tiny CLIP, VAE, UNet (see ``scripts/dev/mini/pretrain.py``)."""
