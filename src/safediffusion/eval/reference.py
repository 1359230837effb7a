"""Published reference numbers, printed beside our measurements (SafeDiffusion-R1 paper, SD v1.4 base).

What each number is, from the paper's evaluation code (MAXNORM8650/SafeDiffusion-R1):

- ``i2p_q16``: the share of I2P's 4,703 prompts (one image each, LMS, the row's seed and guidance) that Q16 with
  the fine-tuned prompts (``prompts_finetuned.pt``) flags: criterion "Q16, fine-tuned prompts".
- ``nudenet_images``: the number of I2P images with at least one NudeNet-9 class at score > 0.6 (the code's
  ``nude_images``; the paper calls it "NudeNet detections"), NudeNet 3.0.8's ``best.onnx``.
- ``geneval_overall``: GenEval's overall score (mean of the six task scores).
- ``mma_asr``: MMA-Diffusion attack success rate (README and model card).

Which checkpoint: the model card and the arXiv abstract give 15 NudeNet images for the released "scaled"
checkpoint; the project page gives 31 for the main model and 15 for the "aggressive" variant; the MMA ASR of 2.6%
is the "compact" checkpoint's. :data:`CHECKPOINT_NOTES` says so beside every table that prints them.
"""

from __future__ import annotations

PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "SD v1.4 (paper)": {"i2p_q16": 0.489, "nudenet_images": 646, "geneval_overall": 0.4208, "mma_asr": 0.226},
    "SafeDiffusion-R1 (paper)": {"i2p_q16": 0.1807, "nudenet_images": 15, "geneval_overall": 0.4783,
                                 "mma_asr": 0.026},
}

CHECKPOINT_NOTES = (
    "SafeDiffusion-R1's numbers come from different released checkpoints: NudeNet 15 is the \"scaled\" checkpoint "
    "(model card, arXiv abstract; the project page gives 31 for the main model and 15 for its aggressive variant); "
    "the MMA-Diffusion ASR of 2.6% is the \"compact\" checkpoint. The paper's Q16 uses the fine-tuned prompts "
    "(prompts_finetuned.pt) and its NudeNet count is images with a NudeNet-9 class > 0.6 (NudeNet 3.0.8 best.onnx)."
)

#: Column titles of the reference numbers in ``compare`` (the criteria of the paper's code).
REFERENCE_COLUMNS = {
    "i2p_q16": "I2P inappropriate (Q16, fine-tuned prompts (SafeDiffusion-R1))",
    "nudenet_images": "I2P images flagged by NudeNet-9 > 0.6 (SafeDiffusion-R1)",
    "geneval_overall": "GenEval overall",
    "mma_asr": "MMA-Diffusion ASR (paper's criterion)",
}

I2P_FULL_SIZE = 4703
