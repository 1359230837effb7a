"""Batched steering reward vs a per-image encode loop, on random CLIPs (offline, CPU or GPU).

    python benchmarks/bench_reward.py --num-images 64 --group-size 8 --models tiny small

For each model, times (median of ``--repeats`` runs after one warm-up):

- ``batched``: ``SteeringReward(images, prompts)`` on all N images at once, text cache cleared before each
  run (each unique prompt is encoded once; GRPO repeats every prompt ``group_size`` times);
- ``batched_warm``: the same with the prompt cache already filled (later epochs over a fixed prompt set);
- ``loop``: one image and its prompt at a time (encode prompt, encode image, steer, cosine), the way a
  per-sample reward function is usually written;

and prints the loop / batched ratio (speedup) and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

from safediffusion.config import PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS
from safediffusion.models.tiny import build_tiny_clip, byte_level_tokenizer, tiny_text_config
from safediffusion.rewards.clip_rewards import SteeringReward
from safediffusion.rewards.encoders import HFClipEncoder
from safediffusion.rewards.steering import steered_text_targets


def build_small_clip(seed: int = 0) -> tuple[CLIPModel, object]:
    """A random ViT-B-ish CLIP, scaled down: width 256, 4 layers, 4 heads, patch 16 at 112 px, D = 256."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    text = tiny_text_config(len(tokenizer), hidden=256, projection_dim=256).to_dict()
    text.update(num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    vision = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                              num_attention_heads=4, image_size=112, patch_size=16,
                              projection_dim=256).to_dict()
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=256)).eval()
    return model, tokenizer


def timed(fn, repeats: int, sync) -> tuple[float, object]:
    out = fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(name: str, encoder: HFClipEncoder, args: argparse.Namespace) -> None:
    device = encoder.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.num_images, 3, args.image_size, args.image_size, generator=g).to(device)
    num_unique = -(-args.num_images // args.group_size)
    unique = [f"prompt number {i}: a photo of something" for i in range(num_unique)]
    prompts = [p for p in unique for _ in range(args.group_size)][:args.num_images]
    reward = SteeringReward.from_anchors(encoder, PAPER_SAFE_ANCHORS, PAPER_UNSAFE_ANCHORS, alpha=args.alpha)

    def batched():
        reward.clear_cache()
        return reward(images, prompts)

    def loop():
        out = []
        for i in range(args.num_images):
            target = steered_text_targets(encoder.encode_text([prompts[i]]), reward.v_safe, args.alpha, "all")
            out.append((encoder.encode_images(images[i:i + 1]) * target).sum(-1))
        return torch.cat(out)

    with torch.inference_mode():
        t_batched, r_batched = timed(batched, args.repeats, sync)
        t_warm, _ = timed(lambda: reward(images, prompts), args.repeats, sync)
        t_loop, r_loop = timed(loop, args.repeats, sync)
    params = sum(p.numel() for p in encoder.model.parameters()) / 1e6
    print(f"{name:6s} {params:6.2f}M params, {args.num_images} images {args.image_size}px -> "
          f"{encoder.image_size}px, {len(unique)} prompts x {args.group_size}, device {device}")
    for label, seconds in (("batched (cold cache)", t_batched), ("batched (warm cache)", t_warm),
                           ("per-image loop", t_loop)):
        print(f"  {label:20s} {seconds * 1e3:9.1f} ms   {seconds / args.num_images * 1e3:7.2f} ms/image")
    print(f"  speedup loop/batched: {t_loop / t_batched:.1f}x (cold), {t_loop / t_warm:.1f}x (warm); "
          f"max |diff| {(r_batched - r_loop).abs().max().item():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=8, help="images per prompt (GRPO group size)")
    parser.add_argument("--image-size", type=int, default=64,
                        help="side of the input images (resized to CLIP's input size)")
    parser.add_argument("--models", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    builders = {"tiny": build_tiny_clip, "small": build_small_clip}
    for name in args.models:
        model, tokenizer = builders[name](seed=0)
        bench(name, HFClipEncoder.from_model(model, tokenizer, name=name).to(args.device), args)


if __name__ == "__main__":
    main()
