"""Side-by-side comparison of evaluation runs, in the layout of the paper's tables.

``compare_runs([dir, ...])`` reads each run's ``results.json``; runs of the same model (same ``name``) on
different suites merge into one row. The main table has one column per metric that any run measured, each
criterion titled by its source (I2P inappropriate rate per criterion, NudeNet flagged images and class
detections, expected maximum inappropriateness, GenEval, CLIP score, FID, attack success rates, the adaptive
attack at its largest strength); detail tables give I2P's per-category rates and NudeNet's per-class counts.
The paper's SD v1.4 and SafeDiffusion-R1 numbers are added as reference rows under the paper's own criteria
(their columns stay empty for runs made under another criterion), with the checkpoint notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safediffusion.errors import UserError
from safediffusion.eval.evaluate import load_results
from safediffusion.eval.reference import CHECKPOINT_NOTES, I2P_FULL_SIZE, PAPER_REFERENCE, REFERENCE_COLUMNS
from safediffusion.eval.report import criteria_labels, figure, markdown_table, pct, rate_cell, write_json

Cell = tuple[str, float | None]  # (text, sortable value)


def _rate(metrics: dict[str, Any], crit: str) -> dict[str, Any] | None:
    return metrics.get("inappropriate", {}).get(crit, {}).get("overall")


def _columns(run: dict[str, Any]) -> dict[str, Cell]:
    """``{column title: (cell text, value)}`` for one run; every criterion is titled by its source's label."""
    m, suite = run["metrics"], run["suite"]
    labels = criteria_labels(run)
    cols: dict[str, Cell] = {}
    if suite == "i2p":
        for crit, r in m.get("inappropriate", {}).items():
            cols[f"I2P inappropriate ({labels.get(crit, crit)})"] = (rate_cell(r["overall"]), r["overall"]["rate"])
        if "nudenet" in m:
            nn = m["nudenet"]
            cols[f"I2P images flagged by {labels.get('nudenet', 'NudeNet')}"] = (str(nn["flagged_images"]),
                                                                                 nn["flagged_images"])
            cols["I2P NudeNet class detections"] = (str(nn["total"]), nn["total"])
        for crit, e in m.get("emi", {}).items():
            if e["mean"] is not None:
                cols[f"I2P expected max. inappropriateness ({labels.get(crit, crit)})"] = (pct(e["mean"]), e["mean"])
    elif suite in ("nudity", "mma", "ring-a-bell") and "asr" in m:
        name = {"nudity": "UnlearnDiffAtk nudity", "mma": "MMA-Diffusion", "ring-a-bell": "Ring-A-Bell"}[suite]
        for crit, r in m["asr"].items():
            cols[f"{name} ASR ({labels.get(crit, crit)})"] = (rate_cell(r), r["rate"])
    elif suite in ("text",) and "inappropriate" in m:
        for crit, r in m["inappropriate"].items():
            cols[f"{Path(run['prompts_file']).name} ({labels.get(crit, crit)})"] = (rate_cell(r["overall"]),
                                                                                  r["overall"]["rate"])
    if "geneval" in m and "overall" in m["geneval"]:
        cols["GenEval overall"] = (pct(m["geneval"]["overall"]), m["geneval"]["overall"])
    if "clip_score" in m:
        cols[f"CLIP score ({suite})"] = (f"{m['clip_score']['mean']:.2f}", m["clip_score"]["mean"])
    if "fid" in m:
        kind = "CLIP" if str(m["fid"].get("features", "")).startswith("clip:") else m["fid"].get("features", "")
        cols[f"FID {kind} ({suite})"] = (f"{m['fid']['value']:.2f}", m["fid"]["value"])
    if "fid_inception" in m:
        cols[f"FID Inception ({suite})"] = (f"{m['fid_inception']['value']:.2f}", m["fid_inception"]["value"])
    if "attack" in m:
        top = max(m["attack"]["strengths"], key=lambda r: r["strength"])
        crit = next((c for c in ("q16_or_nudenet", "q16", "nudenet") if c in top["rates"]), next(iter(top["rates"])))
        cols[f"Concept-shift attack x{top['strength']:g} ({suite}, {labels.get(crit, crit)})"] = (
            rate_cell(top["rates"][crit]), top["rates"][crit]["rate"])
    return cols


def _unique_names(runs: list[dict[str, Any]], dirs: Sequence[Path]) -> list[str]:
    """Model labels; runs of one model on the same suite are told apart by folder (and then by position)."""
    names = [r["name"] for r in runs]
    keys = [(r["name"], r["suite"]) for r in runs]
    for i, key in enumerate(keys):
        if keys.count(key) > 1:
            names[i] = f"{runs[i]['name']} ({dirs[i].name})"
    for i in range(len(names)):
        clashes = [j for j in range(len(names)) if names[j] == names[i] and keys[j] == keys[i]]
        if len(clashes) > 1:
            for k, j in enumerate(clashes, start=1):
                names[j] = f"{names[j]} #{k}"
    return names


def compare_runs(run_dirs: Sequence[str | Path], names: Sequence[str] | None = None,
                 include_paper: bool = True) -> dict[str, Any]:
    """The comparison as data: ``{"models", "columns", "rows", "i2p_categories", "nudenet_classes", ...}``."""
    if not run_dirs:
        raise UserError("compare needs at least one run folder", "pass folders written by `safediffusion evaluate`")
    dirs = [Path(d) for d in run_dirs]
    runs = [load_results(d) for d in dirs]
    if names:
        if len(names) != len(runs):
            raise UserError(f"--names gives {len(names)} names for {len(runs)} run folders", "give one name per folder")
        for r, n in zip(runs, names):
            r["name"] = n
    labels = _unique_names(runs, dirs)
    models: list[str] = []
    rows: dict[str, dict[str, Cell]] = {}
    for label, run in zip(labels, runs):
        if label not in rows:
            models.append(label)
            rows[label] = {}
        rows[label].update(_columns(run))
    columns: list[str] = []
    for label in models:
        for c in rows[label]:
            if c not in columns:
                columns.append(c)
    suites = {r["suite"] for r in runs}
    reference: dict[str, dict[str, Cell]] = {}
    if include_paper and suites & {"i2p", "geneval", "mma"}:
        for ref, v in PAPER_REFERENCE.items():
            cells: dict[str, Cell] = {}
            if "i2p" in suites:
                cells[REFERENCE_COLUMNS["i2p_q16"]] = (pct(v["i2p_q16"]), v["i2p_q16"])
                cells[REFERENCE_COLUMNS["nudenet_images"]] = (str(int(v["nudenet_images"])), v["nudenet_images"])
            if "geneval" in suites:
                cells[REFERENCE_COLUMNS["geneval_overall"]] = (pct(v["geneval_overall"]), v["geneval_overall"])
            if "mma" in suites:
                cells[REFERENCE_COLUMNS["mma_asr"]] = (pct(v["mma_asr"]), v["mma_asr"])
            reference[ref] = cells
        for cells in reference.values():
            for c in cells:
                if c not in columns:
                    columns.append(c)
    i2p = [(lab, r) for lab, r in zip(labels, runs) if r["suite"] == "i2p" and "inappropriate" in r["metrics"]]
    categories: dict[str, dict[str, Any]] = {}
    for lab, r in i2p:
        crit = "q16" if "q16" in r["metrics"]["inappropriate"] else next(iter(r["metrics"]["inappropriate"]))
        categories[lab] = {"criterion": criteria_labels(r).get(crit, crit),
                           "overall": r["metrics"]["inappropriate"][crit]["overall"],
                           "per_category": r["metrics"]["inappropriate"][crit]["per_category"]}
    nudenet: dict[str, dict[str, Any]] = {}
    for lab, r in zip(labels, runs):
        if "nudenet" in r["metrics"] and (lab not in nudenet or r["suite"] == "i2p"):
            nudenet[lab] = {"suite": r["suite"], **r["metrics"]["nudenet"]}
    partial = [lab for lab, r in i2p if r["num_prompts"] != I2P_FULL_SIZE]
    return {"models": models, "columns": columns,
            "rows": {m: {c: rows[m][c][0] for c in rows[m]} for m in models},
            "values": {m: {c: rows[m][c][1] for c in rows[m]} for m in models},
            "reference": {k: {c: v[0] for c, v in cells.items()} for k, cells in reference.items()},
            "i2p_categories": categories, "nudenet": nudenet, "partial_i2p": partial,
            "notes": [CHECKPOINT_NOTES] if reference else [],
            "runs": [str(d) for d in dirs]}


def render_compare_markdown(cmp: dict[str, Any]) -> str:
    cols = cmp["columns"]
    out = ["# Model comparison\n\n"]
    rows = [[f"**{m}**"] + [cmp["rows"][m].get(c, "–") for c in cols] for m in cmp["models"]]
    rows += [[f"_{k}_"] + [cells.get(c, "–") for c in cols] for k, cells in cmp["reference"].items()]
    out.append(markdown_table(["model"] + cols, rows))
    for note in cmp.get("notes", []):
        out.append(f"\n{note}\n")
    if cmp["partial_i2p"]:
        out.append(f"\nI2P runs on a subset of the {I2P_FULL_SIZE} prompts ({', '.join(cmp['partial_i2p'])}): "
                   "detection counts are not comparable to the paper's.\n")
    cats = cmp["i2p_categories"]
    if cats:
        models = list(cats)
        names = list(next(iter(cats.values()))["per_category"])
        out.append("\n## I2P inappropriate rate per category\n\n")
        crit = {cats[m]["criterion"] for m in models}
        out.append(f"Criterion: {', '.join(sorted(crit))}; 95% bootstrap CI.\n\n")
        rows = [[c] + [rate_cell(cats[m]["per_category"].get(c)) for m in models] for c in names]
        rows.append(["**overall**"] + [rate_cell(cats[m]["overall"]) for m in models])
        out.append(markdown_table(["category"] + models, rows))
    nn = cmp["nudenet"]
    if nn:
        models = list(nn)
        classes = list(next(iter(nn.values()))["per_class"])
        out.append("\n## NudeNet exposed classes (images with the class)\n\n")
        rows = [[c.replace("_EXPOSED", "").replace("_", " ").title()] + [nn[m]["per_class"].get(c, "–") for m in models]
                for c in classes]
        rows.append(["**total**"] + [f"**{nn[m]['total']}**" for m in models])
        rows.append(["suite"] + [nn[m]["suite"] for m in models])
        out.append(markdown_table(["class"] + models, rows))
    out.append("\nRuns: " + ", ".join(f"`{r}`" for r in cmp["runs"]) + "\n")
    return "".join(out)


def plot_compare_categories(cmp: dict[str, Any], path: Path) -> Path:
    cats = cmp["i2p_categories"]
    models = list(cats)
    names = ["overall"] + list(next(iter(cats.values()))["per_category"])
    fig = figure(max(6.0, 1.1 * len(names) + 2), 4.0)
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for i, m in enumerate(models):
        rs = [cats[m]["overall"] if c == "overall" else cats[m]["per_category"].get(c) for c in names]
        v = np.array([100 * r["rate"] if r and r["rate"] is not None else np.nan for r in rs])
        lo = np.array([100 * r["low"] if r and r.get("low") is not None else np.nan for r in rs])
        hi = np.array([100 * r["high"] if r and r.get("high") is not None else np.nan for r in rs])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, np.nan_to_num(v), width, label=m,
               yerr=np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)]), capsize=3)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.set_ylabel("inappropriate images (%)")
    ax.set_title("I2P inappropriate rate per category (95% bootstrap CI)")
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def plot_compare_nudenet(cmp: dict[str, Any], path: Path) -> Path:
    nn = cmp["nudenet"]
    models = list(nn)
    classes = list(next(iter(nn.values()))["per_class"])
    fig = figure(7.5, 3.8)
    ax = fig.subplots()
    width = 0.8 / len(models)
    x = np.arange(len(classes))
    for i, m in enumerate(models):
        ax.bar(x + (i - (len(models) - 1) / 2) * width, [nn[m]["per_class"].get(c, 0) for c in classes], width,
               label=f"{m} (total {nn[m]['total']})")
    ax.set_xticks(x, [c.replace("_EXPOSED", "").title() for c in classes], rotation=30, ha="right")
    ax.set_ylabel("images with the class")
    ax.set_title("NudeNet exposed classes")
    ax.legend(fontsize=8)
    fig.savefig(path)
    return path


def write_comparison(run_dirs: Sequence[str | Path], out_dir: str | Path, names: Sequence[str] | None = None,
                     include_paper: bool = True) -> tuple[dict[str, Any], str]:
    """Write ``compare.md``, ``compare.json`` and plots into ``out_dir``; returns (data, markdown)."""
    cmp = compare_runs(run_dirs, names=names, include_paper=include_paper)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    if cmp["i2p_categories"]:
        plots.append(plot_compare_categories(cmp, out / "compare_categories.png").name)
    if cmp["nudenet"]:
        plots.append(plot_compare_nudenet(cmp, out / "compare_nudenet.png").name)
    cmp["plots"] = plots
    md = render_compare_markdown(cmp) + "".join(f"\n![{p}]({p})\n" for p in plots)
    write_json(out / "compare.json", cmp)
    (out / "compare.md").write_text(md, encoding="utf-8")
    return cmp, md
