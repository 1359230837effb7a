"""Measure the miniature world's shipped models (writes JSON and image grids).

    python scripts/dev/mini/report.py [--out runs/mini_pretrain/report] [--max-prompts N]

* CLIP held-out retrieval: pairs from a dataset seed never used in pretraining, in groups of 100;
  top-1 image->text and text->image (a hit when the retrieved caption text equals the true caption).
* Attributes: zero-shot accuracy on single-object renders (20 per shape x colour) of the shape (3-way,
  "a photo of a <shape>") and of shape and colour together (12-way, "a photo of a <colour> <shape>"), and
  the cosine between the text tower's last hidden states at the shape word of "a photo of a circle" /
  "square" / "triangle": these states are what the UNet's cross-attention reads.
* v_safe AUC: ``v_safe = normalize(mean t(safe anchors) - mean t(unsafe anchors))``; score
  ``f_img . v_safe`` of held-out images; AUC of marker-free (positive) vs marker images. Also per
  category with that category's anchors (images with that marker vs marker-free).
* Base model: ``evaluate_mini`` on mini-i2p and mini-geneval (unsafe rates, GenEval accuracy, FD, CLIP
  score) with the documented protocol.
* VAE ceiling: mini-geneval accuracy of the rendered reference images themselves and of their VAE
  reconstructions ``D(mean q(z|x))``, i.e. the best a perfect UNet could score through this VAE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score_pos > score_neg) + 0.5 P(tie) (the Mann-Whitney form of ROC AUC)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@torch.no_grad()
def attribute_report(model, tok, per_cell: int = 20, seed: int = 0) -> dict:
    """Zero-shot shape / shape+colour accuracy on single-object renders and shape-word state cosines."""
    from safediffusion.mini.clip import image_features, text_features
    from safediffusion.mini.render import realize, render_batch, to_tensor
    from safediffusion.mini.world import COLORS, SHAPES, Composition, ObjectSpec

    rng = np.random.default_rng(seed)
    comps = [Composition("colors", (ObjectSpec(s, c),)) for s in SHAPES for c in COLORS for _ in range(per_cell)]
    f_img = image_features(model, to_tensor(render_batch([realize(c, rng) for c in comps])))
    shape_txt = text_features(model, tok, [f"a photo of a {s}" for s in SHAPES])
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    pair_txt = text_features(model, tok, [f"a photo of a {c} {s}" for s, c in pairs])
    shape_true = np.array([SHAPES.index(c.objects[0].shape) for c in comps])
    pair_true = np.array([pairs.index((c.objects[0].shape, c.objects[0].color)) for c in comps])
    prompts = [f"a photo of a {s}" for s in SHAPES]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    word = [tok(p).input_ids.index(tok.convert_tokens_to_ids(f"{s}</w>")) for p, s in zip(prompts, SHAPES)]
    states = model.text_model(input_ids=ids).last_hidden_state
    h = torch.nn.functional.normalize(torch.stack([states[i, w] for i, w in enumerate(word)]), dim=-1)
    cos = h @ h.T
    return {"zero_shot_shape_accuracy": float(((f_img @ shape_txt.T).argmax(1).numpy() == shape_true).mean()),
            "zero_shot_shape_colour_accuracy": float(((f_img @ pair_txt.T).argmax(1).numpy() == pair_true).mean()),
            "shape_word_state_cosine": {f"{SHAPES[i]}-{SHAPES[j]}": round(float(cos[i, j]), 4)
                                        for i in range(len(SHAPES)) for j in range(i + 1, len(SHAPES))},
            "n_images": len(comps)}


@torch.no_grad()
def clip_report(n: int = 2000, seed: int = 12345, clip_dir: str | None = None) -> dict:
    from safediffusion.mini.anchors import MINI_CATEGORY_ANCHORS, MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS
    from safediffusion.mini.clip import image_features, load_mini_clip, text_features
    from safediffusion.mini.data import build_dataset
    from safediffusion.mini.render import to_tensor

    model, tok = load_mini_clip(clip_dir)
    data = build_dataset(n, seed, progress=False)
    f_img = torch.cat([image_features(model, to_tensor(data.images[i:i + 250])) for i in range(0, n, 250)])
    f_txt = torch.cat([text_features(model, tok, list(data.captions[i:i + 250])) for i in range(0, n, 250)])
    i2t, t2i = [], []
    for g in range(0, n, 100):
        sim = f_img[g:g + 100] @ f_txt[g:g + 100].T
        caps = data.captions[g:g + 100]
        i2t += [caps[j] == caps[k] for k, j in enumerate(sim.argmax(1).tolist())]
        t2i += [caps[j] == caps[k] for k, j in enumerate(sim.argmax(0).tolist())]
    res = {"retrieval_top1_image_to_text": float(np.mean(i2t)), "retrieval_top1_text_to_image": float(np.mean(t2i)),
           "retrieval_group_size": 100, "n": n}
    marker = data.markers
    clean = marker == ""

    def direction(safe, unsafe):
        v = text_features(model, tok, safe).mean(0) - text_features(model, tok, unsafe).mean(0)
        return torch.nn.functional.normalize(v, dim=0)

    score = (f_img @ direction(MINI_SAFE_ANCHORS, MINI_UNSAFE_ANCHORS)).numpy()
    res["v_safe_auc"] = auc(score[clean], score[~clean])
    res["v_safe_auc_per_category"] = {}
    res["category_anchor_auc"] = {}
    for cat, anchors in MINI_CATEGORY_ANCHORS.items():
        res["v_safe_auc_per_category"][cat] = auc(score[clean], score[marker == cat])
        s_cat = (f_img @ direction(MINI_SAFE_ANCHORS, anchors)).numpy()
        res["category_anchor_auc"][cat] = auc(s_cat[clean], s_cat[marker == cat])
    res["marker_fraction"] = float((~clean).mean())
    res["attributes"] = attribute_report(model, tok)
    return res


@torch.no_grad()
def vae_ceiling(bundle, max_prompts: int | None = None) -> dict:
    from safediffusion.mini.evaluate import references, score_geneval
    from safediffusion.mini.suites import build_suite

    records = build_suite("mini-geneval", max_prompts=max_prompts)
    refs = references(records)
    vae = bundle.vae
    recon = torch.cat([vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample
                       for x in refs.split(128)]).add(1).div(2).clamp(0, 1)
    rendered, through_vae = score_geneval(records, refs), score_geneval(records, recon)
    return {"rendered_accuracy": rendered["accuracy"], "vae_reconstruction_accuracy": through_vae["accuracy"],
            "vae_reconstruction_per_task": through_vae["per_task"], "n": len(records)}


def save_grid(images: torch.Tensor, path: Path, ncol: int = 16) -> None:
    from PIL import Image

    imgs = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    n = len(imgs) - len(imgs) % ncol or len(imgs)
    rows = [np.concatenate(list(imgs[r:r + ncol]), 1) for r in range(0, n, ncol) if len(imgs[r:r + ncol]) == ncol]
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/mini_pretrain/report")
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=5.0)
    p.add_argument("--num-steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-clip", action="store_true")
    p.add_argument("--clip", default=None, help="CLIP dir to measure (default: the shipped one)")
    p.add_argument("--model", default="mini", help="pipeline dir to measure (default: the shipped one)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    t = time.time()
    if not args.skip_clip:
        report["clip"] = clip_report(clip_dir=args.clip)
        print(json.dumps(report["clip"], indent=2), f"({time.time() - t:.0f}s)", flush=True)
    from safediffusion.mini.evaluate import evaluate_mini
    from safediffusion.models.bundle import load_bundle

    bundle = load_bundle(args.model)
    t = time.time()
    res = evaluate_mini(bundle, num_steps=args.num_steps, guidance_scale=args.guidance_scale,
                        max_prompts=args.max_prompts)
    for suite, images in res.pop("images").items():
        save_grid(images[:256], out / f"{suite}.png")
    res.pop("prompts")
    report["base"] = res
    report["vae_ceiling"] = vae_ceiling(bundle, args.max_prompts)
    report["eval_seconds"] = time.time() - t
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("base", "vae_ceiling")}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
