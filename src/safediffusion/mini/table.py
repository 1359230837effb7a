"""The miniature paper table: the paper's ablations re-run end to end on the miniature world.

Rows (each a GRPO run from the shipped base model with the ``mini`` config, only the reward changed):

| row | reward |
|---|---|
| base | no training |
| steering | ``cos(z_img, normalize(z_text + 0.5 v_safe))`` (SafeDiffusion-R1) |
| clip | plain CLIP alignment ``cos(z_img, z_text)`` (= steering with alpha 0) |
| negative | ``-mean_j cos(z_img, z_unsafe_j)`` (negative-only) |
| unsafe-anchors-only | steering with ``v_safe = normalize(-mean z(unsafe anchors))`` |
| detector | ``1 - 1[marker]`` by the world's exact detector: the ceiling of the recipe (no CLIP) |

plus an alpha sweep of the steering reward (``--alphas``, default 0, 0.25, 0.5, 0.75, 1; alpha 0 is the
``clip`` row, 0.5 the ``steering`` row, the others are runs ``alpha-<value>``) and an out-of-domain check:
anchors and unsafe training prompts of one category only, unsafe rates of the others.

Every run lives in ``OUT/runs/<name>`` and resumes like any training run, so an interrupted table command
continues where it stopped. ``OUT/table.md`` / ``table.json`` / ``alpha_sweep.png`` hold the results.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safediffusion.config import Config, load_config, resolve_config_path

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def table_runs(ood_category: str, alphas: tuple[float, ...] = ALPHAS) -> dict[str, list[str]]:
    """``{run name: config overrides}`` for every GRPO run of the table (``alphas``: the sweep's values)."""
    from safediffusion.mini.anchors import MINI_CATEGORY_ANCHORS

    paper_alpha = "reward.alpha=0.5"  # explicit, so the rows do not depend on the base config's alpha
    runs: dict[str, list[str]] = {
        "steering": [paper_alpha],
        "clip": ["reward.name=clip"],
        "negative": ["reward.name=negative"],
        "unsafe-anchors-only": [paper_alpha, "reward.safe_anchors=[]"],
        "detector": ["reward.name=mini-detector"],
    }
    for alpha in alphas:
        if alpha not in (0.0, 0.5):
            runs[f"alpha-{alpha:g}"] = [f"reward.alpha={alpha}"]
    ood_anchors = json.dumps(MINI_CATEGORY_ANCHORS[ood_category])
    runs[f"ood-{ood_category}"] = [paper_alpha, f"reward.unsafe_anchors={ood_anchors}",
                                   f"data.unsafe_prompts=mini:unsafe:{ood_category}"]
    return runs


def _alpha_of(name: str) -> float | None:
    if name == "steering":
        return 0.5
    if name == "clip":
        return 0.0
    if name.startswith("alpha-"):
        return float(name.split("-", 1)[1])
    return None


def parse_alphas(text: str) -> tuple[float, ...]:
    """``"0,0.5,3"`` -> ``(0.0, 0.5, 3.0)``: comma-separated, finite, >= 0, sorted, without repeats."""
    try:
        values = {float(v) for v in text.split(",") if v.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers, e.g. 0,0.5,1,3; got {text!r}") from None
    if not values or not all(0.0 <= v < float("inf") for v in values):  # also rejects nan
        raise argparse.ArgumentTypeError(f"finite alphas >= 0, e.g. 0,0.5,1,3; got {text!r}")
    return tuple(sorted(values))


def add_table_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="runs/table", help="where runs and the table go")
    parser.add_argument("--config", default="mini", help="base config of every run (default: mini)")
    parser.add_argument("--ood-category", default="gore", help="category of the out-of-domain run")
    parser.add_argument("--alphas", type=parse_alphas, default=ALPHAS,
                        help="steering alphas of the sweep, comma-separated (default 0,0.25,0.5,0.75,1)")
    parser.add_argument("--only", default=None, help="comma-separated subset of run names (default: all)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")


def run_table(args: argparse.Namespace) -> int:
    from safediffusion.mini.report import evaluate_models, summary
    from safediffusion.rl.trainer import GRPOTrainer

    out = Path(args.output_dir)
    base_path = resolve_config_path(args.config)
    base_cfg = load_config(base_path, list(args.overrides) + ["eval.enabled=false"])
    runs = table_runs(args.ood_category, args.alphas)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        runs = {k: v for k, v in runs.items() if k in wanted}
    # validate every run's config before training anything
    cfgs = {name: load_config(base_path, list(args.overrides) + extra + ["eval.enabled=false"])
            for name, extra in runs.items()}
    for name, cfg in cfgs.items():
        print(f"[table] run {name}", flush=True)
        GRPOTrainer(cfg, out / "runs" / name).train()
    models = {"base": base_cfg.model.pretrained, **{n: str(out / "runs" / n / "final") for n in cfgs}}
    results = evaluate_models(models, base_cfg, progress=base_cfg.logging.progress)
    table = {name: summary(res) for name, res in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(table, indent=2))
    command = getattr(args, "command_line", "safediffusion table")  # set by safediffusion.cli.main
    md = render_table(table, args.ood_category, command)
    (out / "table.md").write_text(md)
    plot_alpha_sweep(table, out / "alpha_sweep.png")
    print(md)
    return 0


def _row(name: str, res: dict[str, Any], cats: list[str], tasks: list[str]) -> str:
    i2p, gen = res["mini-i2p"], res["mini-geneval"]
    cells = [name, *(f"{i2p['per_category'][c]:.3f}" for c in cats), f"**{i2p['unsafe_rate']:.3f}**",
             *(f"{gen['per_task'][t]:.2f}" for t in tasks), f"**{gen['accuracy']:.3f}**",
             f"{gen.get('fd', float('nan')):.3f}", f"{gen.get('clip_score', float('nan')):.2f}",
             f"{gen.get('tint_rate', float('nan')):.2f}"]
    return "| " + " | ".join(cells) + " |"


def render_table(table: dict[str, dict[str, Any]], ood_category: str, command: str) -> str:
    base = table["base"]
    cats = list(base["mini-i2p"]["per_category"])
    tasks = list(base["mini-geneval"]["per_task"])
    header = ["model", *(f"unsafe: {c}" for c in cats), "unsafe: overall", *tasks, "GenEval", "FD", "CLIP score",
              "tinted"]
    lines = [f"Reproduce: `{command}`", "", "GenEval, FD, CLIP score and tinted (share of pastel, safe-cue backgrounds) "
             "on mini-GenEval's benign prompts.", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    main_rows = ["base", "steering", "clip", "negative", "unsafe-anchors-only", "detector"]
    for name in main_rows:
        if name in table:
            lines.append(_row(name, table[name], cats, tasks))
    lines += ["", "Relative change of the overall unsafe rate and GenEval change vs base:", ""]
    b_unsafe, b_acc = base["mini-i2p"]["unsafe_rate"], base["mini-geneval"]["accuracy"]
    for name, res in table.items():
        if name == "base":
            continue
        u, a = res["mini-i2p"]["unsafe_rate"], res["mini-geneval"]["accuracy"]
        rel = (b_unsafe - u) / b_unsafe if b_unsafe > 0 else float("nan")
        lines.append(f"- {name}: unsafe {b_unsafe:.3f} -> {u:.3f} ({-100 * rel:+.1f}%), "
                     f"GenEval {b_acc:.3f} -> {a:.3f} ({100 * (a - b_acc):+.1f} points)")
    sweep = sorted((a, n) for n in table if (a := _alpha_of(n)) is not None)
    if sweep:
        lines += ["", "Alpha sweep (steering reward): ![alpha sweep](alpha_sweep.png)", "",
                  "| alpha | unsafe: overall | GenEval |", "|---|---|---|"]
        for a, n in sweep:
            lines.append(f"| {a:g} | {table[n]['mini-i2p']['unsafe_rate']:.3f} | "
                         f"{table[n]['mini-geneval']['accuracy']:.3f} |")
    ood = f"ood-{ood_category}"
    if ood in table:
        lines += ["", f"Out of domain: anchors and unsafe prompts of `{ood_category}` only.", "",
                  "| model | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 1)]
        for name in ("base", "steering", ood):
            if name in table:
                lines.append(f"| {name} | " + " | ".join(f"{table[name]['mini-i2p']['per_category'][c]:.3f}"
                                                         for c in cats) + " |")
        others = [c for c in cats if c != ood_category]
        if ood in table and others:
            b = sum(base["mini-i2p"]["per_category"][c] for c in others) / len(others)
            o = sum(table[ood]["mini-i2p"]["per_category"][c] for c in others) / len(others)
            lines += ["", f"Unseen categories ({', '.join(others)}), mean unsafe rate: {b:.3f} -> {o:.3f} "
                      f"({-100 * (b - o) / b if b > 0 else float('nan'):+.1f}% relative)."]
    return "\n".join(lines) + "\n"


def plot_alpha_sweep(table: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted((a, n) for n in table if (a := _alpha_of(n)) is not None)
    if not sweep:
        return
    alphas = [a for a, _ in sweep]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(alphas, [table[n]["mini-i2p"]["unsafe_rate"] for _, n in sweep], marker="o", label="unsafe rate")
    ax.plot(alphas, [table[n]["mini-geneval"]["accuracy"] for _, n in sweep], marker="s", label="GenEval acc.")
    ax.axhline(table["base"]["mini-i2p"]["unsafe_rate"], ls="--", c="C0", alpha=0.5, label="base unsafe")
    ax.axhline(table["base"]["mini-geneval"]["accuracy"], ls="--", c="C1", alpha=0.5, label="base GenEval")
    ax.set_xlabel("alpha")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("steering strength")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def config_for(name: str, config: str = "mini", overrides: list[str] | None = None,
               ood_category: str = "gore", alphas: tuple[float, ...] = ALPHAS) -> Config:
    """The config of one table run (for scripts and tests)."""
    return load_config(resolve_config_path(config),
                       list(overrides or []) + table_runs(ood_category, alphas)[name])
