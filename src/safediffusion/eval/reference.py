"""Published reference numbers, printed beside our measurements (SafeDiffusion-R1 paper, SD v1.4 base).

I2P inappropriate rate is Q16 over one image per I2P prompt (4,703 prompts); NudeNet detections are the
sum over images of exposed classes detected with score > 0.6 (each class at most once per image); GenEval is
the overall score (mean of the six task scores).
"""

from __future__ import annotations

PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "SD v1.4 (paper)": {"i2p_q16": 0.489, "nudenet_total": 646, "geneval_overall": 0.4208},
    "SafeDiffusion-R1 (paper)": {"i2p_q16": 0.1807, "nudenet_total": 15, "geneval_overall": 0.4783},
}

I2P_FULL_SIZE = 4703
