"""Evaluation of text-to-image models the way the safety papers measure them.

Modules (one concept each):

- :mod:`~safediffusion.eval.suites` — prompt suites (I2P, UnlearnDiffAtk nudity, MMA-Diffusion, COCO, GenEval,
  text files) as validated :class:`~safediffusion.eval.suites.PromptRecord` lists;
- :mod:`~safediffusion.eval.generation` — batched, per-image-seeded, resumable generation named by case number;
- :mod:`~safediffusion.eval.detectors` — NudeNet, Q16 (with a numpy-only unpickler for its prompt file);
- :mod:`~safediffusion.eval.detection` — runs detectors and keys results by case number;
- :mod:`~safediffusion.eval.metrics` — rates with bootstrap CIs, NudeNet counts, ASR, CLIP score, FID;
- :mod:`~safediffusion.eval.geneval` — GenEval folder layout and results parsing;
- :mod:`~safediffusion.eval.attacks` — concept-shift attack in the diffusion model's text-encoder space;
- :mod:`~safediffusion.eval.evaluate` — one run end to end; :mod:`~safediffusion.eval.compare` — tables across runs;
- :mod:`~safediffusion.eval.report` — results.json, report.md, plots, blurred grids;
- :mod:`~safediffusion.eval.commands` — ``safediffusion evaluate | compare | generate``.
"""
