"""The training report of a miniature-world run: base vs trained model on mini-i2p and mini-geneval.

Writes into the run directory:

    report.md, report.json                 the numbers (base, trained, change)
    report/reward_curve.png                reward (and rollout marker rate, when logged) per epoch, from metrics.jsonl
    report/unsafe_rates.png                unsafe rate per category, base vs trained
    report/geneval.png                     mini-GenEval accuracy per task, base vs trained
    report/grid_mini-i2p.png, ...          the same prompts and seeds, base (top) vs trained (bottom)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safediffusion.config import Config
from safediffusion.models.bundle import load_bundle
from safediffusion.rl.run_files import read_metrics

GRID_COLUMNS = 8


def evaluate_models(models: dict[str, str], cfg: Config, progress: bool = True) -> dict[str, dict[str, Any]]:
    """``{label: model dir or name}`` -> ``{label: result}`` under one protocol (``cfg.eval``).

    A result is :func:`~safediffusion.mini.evaluate.evaluate_mini`'s with ``images``/``prompts`` cut down to
    the report's grid columns, and ``"source"``: "computed", or "cache"/"shipped cache" for the shipped
    world, whose deterministic result is cached by :mod:`safediffusion.mini.eval_cache`.
    """
    from safediffusion.mini import eval_cache

    out = {}
    for label, name in models.items():
        protocol = eval_protocol(cfg)

        def compute(name: str = name, protocol: dict[str, Any] = protocol) -> dict[str, Any]:
            return grid_only(_evaluate(name, protocol, progress))

        out[label], source = eval_cache.get_or_compute(name, protocol, compute)
        out[label]["source"] = source
    return out


def eval_protocol(cfg: Config) -> dict[str, Any]:
    """The arguments of :func:`~safediffusion.mini.evaluate.evaluate_mini` that ``cfg`` decides."""
    return {"suites": list(cfg.eval.suites), "num_steps": cfg.eval.num_steps or 20,
            "guidance_scale": cfg.sampling.guidance_scale, "seed": cfg.eval.seed, "max_prompts": cfg.eval.max_prompts,
            "grid_columns": GRID_COLUMNS}


def _evaluate(name: str, protocol: dict[str, Any], progress: bool) -> dict[str, Any]:
    from safediffusion.mini.clip import load_mini_clip
    from safediffusion.mini.evaluate import evaluate_mini

    bundle = load_bundle(name)
    for m in (bundle.unet, bundle.text_encoder, bundle.vae):
        if m is not None:
            m.eval()
    return evaluate_mini(bundle, suites=tuple(protocol["suites"]), num_steps=protocol["num_steps"],
                         guidance_scale=protocol["guidance_scale"], seed=protocol["seed"],
                         max_prompts=protocol["max_prompts"], progress=progress, clip=load_mini_clip())


def grid_only(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with each suite's ``images``/``prompts`` reduced to the report grid's columns."""
    out = dict(result)
    out["images"], out["prompts"] = {}, {}
    for suite, prompts in result["prompts"].items():
        idx = _grid_indices(prompts, GRID_COLUMNS)
        out["images"][suite] = result["images"][suite][idx]
        out["prompts"][suite] = [prompts[i] for i in idx]
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The scalar metrics of one ``evaluate_mini`` result (images and prompt lists dropped)."""
    return {k: v for k, v in result.items() if k not in ("images", "prompts", "source")}


def headline(base: dict[str, Any], trained: dict[str, Any]) -> dict[str, float]:
    """Unsafe rate and accuracy before/after, relative unsafe reduction, accuracy change in points."""
    out: dict[str, float] = {}
    if "mini-i2p" in base:
        b, t = base["mini-i2p"]["unsafe_rate"], trained["mini-i2p"]["unsafe_rate"]
        out.update(unsafe_rate_base=b, unsafe_rate_trained=t,
                   unsafe_relative_reduction=(b - t) / b if b > 0 else float("nan"))
    if "mini-geneval" in base:
        b, t = base["mini-geneval"]["accuracy"], trained["mini-geneval"]["accuracy"]
        out.update(geneval_base=b, geneval_trained=t, geneval_change_points=100 * (t - b))
        for key in ("fd", "clip_score", "tint_rate"):
            if key in base["mini-geneval"]:
                out[f"{key}_base"] = base["mini-geneval"][key]
                out[f"{key}_trained"] = trained["mini-geneval"][key]
    return out


def _bar_plot(path: Path, title: str, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.2))
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reward_curve(metrics: list[dict[str, Any]], path: Path) -> None:
    """Mean reward per epoch (all, benign and unsafe prompts) and, when logged
    (``logging.rollout_metrics: [marker_rate]``), the detector's marker rate of the rollouts per epoch in a
    second panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("reward_mean", "reward", f"GRPO reward ({len(metrics)} epochs)")]
    if any("marker_rate" in m for m in metrics):
        panels.append(("marker_rate", "rollouts with a marker", "marker rate of the rollouts (exact detector)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.2), squeeze=False)
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        for suffix, label in (("", "all prompts"), ("/benign", "benign"), ("/unsafe", "unsafe")):
            pts = [(m["epoch"], m[key + suffix]) for m in metrics if key + suffix in m]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_before_after_grid(images: dict[str, torch.Tensor], prompts: list[str], path: Path,
                           title: str) -> None:
    """One row per model (same prompts and seeds in each column), prompts as column titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(images)
    n = len(prompts)
    fig, axes = plt.subplots(len(labels), n, figsize=(1.45 * n, 1.7 * len(labels) + 0.6), squeeze=False)
    for r, label in enumerate(labels):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[label][c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                words = prompts[c].split()
                ax.set_title("\n".join(" ".join(words[i:i + 3]) for i in range(0, min(len(words), 9), 3)),
                             fontsize=6)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _grid_indices(prompts: list[str], n: int) -> list[int]:
    return [int(i) for i in np.linspace(0, len(prompts) - 1, min(n, len(prompts))).round()]


def _ends(metrics: list[dict[str, Any]], key: str, k: int = 5, digits: int = 4) -> str:
    """``"a -> b"``: means of ``key`` over the first and last ``k`` epochs that logged it ("n/a" if none).
    Each epoch draws other prompts, so single epochs are too noisy to compare."""
    values = [m[key] for m in metrics if key in m]
    if not values:
        return "n/a"
    k = min(k, len(values))
    return f"{sum(values[:k]) / k:.{digits}f} -> {sum(values[-k:]) / k:.{digits}f}"


def render_report(results: dict[str, dict[str, Any]], out_dir: Path, metrics: list[dict[str, Any]] | None,
                  title: str, command: str) -> Path:
    """Write report.md / report.json / plots / grids for ``{"base": ..., "trained": ...}`` results."""
    fig_dir = out_dir / "report"
    fig_dir.mkdir(parents=True, exist_ok=True)
    base, trained = results["base"], results["trained"]
    head = headline(base, trained)
    data = {"headline": head, "base": summary(base), "trained": summary(trained)}
    (out_dir / "report.json").write_text(json.dumps(data, indent=2))

    lines = [f"# {title}", "", f"Reproduce: `{command}`", ""]
    if metrics:
        plot_reward_curve(metrics, fig_dir / "reward_curve.png")
        lines += ["## Training", "",
                  f"{len(metrics)} epochs; mean of the first / last {min(5, len(metrics))} epochs: reward "
                  f"{_ends(metrics, 'reward_mean')} (unsafe prompts {_ends(metrics, 'reward_mean/unsafe')}); "
                  f"within-group reward std {_ends(metrics, 'reward_group_std')}.", ""]
        if any("marker_rate/unsafe" in m for m in metrics):
            k = min(5, sum("marker_rate/unsafe" in m for m in metrics))
            lines += [f"Rollouts of unsafe prompts with a marker (exact detector; mean of the first / last {k} "
                      f"epochs): {_ends(metrics, 'marker_rate/unsafe', digits=3)}.", ""]
        lines += ["![reward curve](report/reward_curve.png)", ""]
    lines += ["## Results", "", "| metric | base | trained | change |", "|---|---|---|---|"]
    if "mini-i2p" in base:
        b, t = base["mini-i2p"], trained["mini-i2p"]
        lines.append(f"| mini-i2p unsafe rate (overall) | {b['unsafe_rate']:.3f} | {t['unsafe_rate']:.3f} | "
                     f"{-100 * head['unsafe_relative_reduction']:+.1f}% relative |")
        for cat in b["per_category"]:
            lines.append(f"| unsafe rate: {cat} | {b['per_category'][cat]:.3f} | {t['per_category'][cat]:.3f} | "
                         f"{t['per_category'][cat] - b['per_category'][cat]:+.3f} |")
        for cue in ("explicit", "implicit"):
            if b.get(cue) is not None:
                lines.append(f"| unsafe rate: {cue} prompts | {b[cue]:.3f} | {t[cue]:.3f} | {t[cue] - b[cue]:+.3f} |")
        cats = list(b["per_category"])
        _bar_plot(fig_dir / "unsafe_rates.png", "mini-i2p unsafe rate (lower is safer)", ["overall", *cats],
                  {"base": [b["unsafe_rate"], *[b["per_category"][c] for c in cats]],
                   "trained": [t["unsafe_rate"], *[t["per_category"][c] for c in cats]]}, "unsafe rate")
    if "mini-geneval" in base:
        b, t = base["mini-geneval"], trained["mini-geneval"]
        lines.append(f"| mini-GenEval accuracy (overall) | {b['accuracy']:.3f} | {t['accuracy']:.3f} | "
                     f"{head['geneval_change_points']:+.1f} points |")
        for task in b["per_task"]:
            lines.append(f"| GenEval: {task} | {b['per_task'][task]:.3f} | {t['per_task'][task]:.3f} | "
                         f"{t['per_task'][task] - b['per_task'][task]:+.3f} |")
        for key, label in (("fd", "FD (tiny-CLIP features, lower is better)"), ("clip_score", "CLIP score"),
                           ("tint_rate", "pastel (safe-cue) backgrounds on these benign prompts")):
            if key in b:
                lines.append(f"| {label} | {b[key]:.3f} | {t[key]:.3f} | {t[key] - b[key]:+.3f} |")
        tasks = list(b["per_task"])
        _bar_plot(fig_dir / "geneval.png", "mini-GenEval accuracy (higher is better)", ["overall", *tasks],
                  {"base": [b["accuracy"], *[b["per_task"][k] for k in tasks]],
                   "trained": [t["accuracy"], *[t["per_task"][k] for k in tasks]]}, "accuracy")
    lines.append("")
    for name, png in (("mini-i2p", "unsafe_rates.png"), ("mini-geneval", "geneval.png")):
        if name in base:
            lines += [f"![{name}](report/{png})", ""]
    lines += ["## Same prompts, same seeds", ""]
    for suite in [s for s in ("mini-i2p", "mini-geneval") if s in base.get("images", {})]:
        prompts = base["prompts"][suite]
        idx = _grid_indices(prompts, GRID_COLUMNS)
        grid = {label: res["images"][suite][idx] for label, res in results.items()}
        plot_before_after_grid(grid, [prompts[i] for i in idx], fig_dir / f"grid_{suite}.png",
                               f"{suite}: base (top) vs trained (bottom)")
        lines += [f"![{suite} grid](report/grid_{suite}.png)", ""]
    protocol = base.get("protocol", {})
    lines += ["## Protocol", "", ", ".join(f"{k}={v}" for k, v in protocol.items()),
              *([f"Base model's numbers: {base['source']} (the evaluation is deterministic; "
                 "`safediffusion.mini.eval_cache`)."] if base.get("source", "computed") != "computed" else []),
              "All images are judged by the world's exact detector (`safediffusion.mini.detector`).", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_training_report(cfg: Config, output_dir: str | Path, progress: bool = True,
                          command: str = "safediffusion train") -> Path:
    """Evaluate ``cfg.model.pretrained`` and ``OUTPUT/final`` and write the report (see module doc).

    ``command``: the command line the report names as its reproduction (the CLI passes the one it parsed).
    """
    output_dir = Path(output_dir)
    results = evaluate_models({"base": cfg.model.pretrained, "trained": str(output_dir / "final")}, cfg,
                              progress=progress)
    metrics_path = output_dir / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else None
    return render_report(results, output_dir, metrics, "SafeDiffusion-R1 on the miniature world", command)
