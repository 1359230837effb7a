"""Run one config with several training seeds and print the headline numbers as mean ± std.

    python scripts/dev/mini/seeds.py --config mini --seeds 0 1 2 --output-dir runs/seeds-mini
    python scripts/dev/mini/seeds.py --config mini-long --seeds 0 1 2 --output-dir runs/seeds-mini-long

Each seed is ``safediffusion train --config CONFIG --output-dir OUT/seed-<s> seed=<s>`` in its own process
(the evaluation protocol, ``eval.seed``, is the same for all), timed from start to end of that process; a seed
whose ``report.json`` exists is not re-run. Writes ``OUT/seeds.md`` and ``OUT/seeds.json``.
Time a run only with nothing else on the machine: a second busy process makes both several times slower.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METRICS = (("unsafe_rate_base", "unsafe rate, base", 3), ("unsafe_rate_trained", "unsafe rate, trained", 3),
           ("unsafe_relative_reduction", "relative cut of the unsafe rate", 3),
           ("geneval_base", "mini-GenEval, base", 3), ("geneval_trained", "mini-GenEval, trained", 3),
           ("geneval_change_points", "mini-GenEval change (points)", 1),
           ("fd_ratio", "FD trained / base", 2), ("clip_score_change", "CLIP score change", 2),
           ("tint_rate_trained", "mini-GenEval images with a pastel background, trained", 3),
           ("explicit_trained", "unsafe rate, explicit prompts, trained", 3),
           ("implicit_trained", "unsafe rate, implicit prompts, trained", 3),
           ("wall_minutes", "wall time (minutes, whole command)", 1))


def run_seed(config: str, seed: int, out: Path, extra: list[str]) -> float | None:
    """Train + report for one seed; the wall time in minutes, or None if it was already done."""
    if (out / "report.json").is_file():
        return None
    cmd = [sys.executable, "-m", "safediffusion", "train", "--config", config, "--output-dir", str(out),
           f"seed={seed}", "logging.progress=false", *extra]
    print("[seeds]", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return (time.perf_counter() - start) / 60


def row(out: Path, minutes: float | None) -> dict[str, float]:
    report = json.loads((out / "report.json").read_text())
    h = dict(report["headline"])
    h["fd_ratio"] = h["fd_trained"] / h["fd_base"]
    h["clip_score_change"] = h["clip_score_trained"] - h["clip_score_base"]
    h["explicit_trained"] = report["trained"]["mini-i2p"]["explicit"]
    h["implicit_trained"] = report["trained"]["mini-i2p"]["implicit"]
    timing = out / "wall_minutes.txt"
    if minutes is not None:
        timing.write_text(f"{minutes:.2f}\n")
    if timing.is_file():
        h["wall_minutes"] = float(timing.read_text())
    return h


def render(rows: dict[int, dict[str, float]], command: str) -> str:
    seeds = list(rows)
    lines = [f"Reproduce: `{command}`", "", "| metric | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean ± std |", "|---|" + "---|" * (len(seeds) + 1)]
    for key, label, digits in METRICS:
        values = [rows[s][key] for s in seeds if key in rows[s]]
        if not values:
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = [f"{rows[s][key]:.{digits}f}" if key in rows[s] else "n/a" for s in seeds]
        lines.append(f"| {label} | " + " | ".join(cells)
                     + f" | {statistics.mean(values):.{digits}f} ± {std:.{digits}f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mini")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every seed")
    args = parser.parse_args()
    out = Path(args.output_dir or f"runs/seeds-{Path(args.config).stem}")
    rows = {}
    for seed in args.seeds:
        run_dir = out / f"seed-{seed}"
        rows[seed] = row(run_dir, run_seed(args.config, seed, run_dir, args.overrides))
    command = " ".join(["python scripts/dev/mini/seeds.py", *sys.argv[1:]])
    md = render(rows, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.md").write_text(md)
    (out / "seeds.json").write_text(json.dumps(rows, indent=1))
    print(md)


if __name__ == "__main__":
    main()
