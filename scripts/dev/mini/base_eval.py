"""Regenerate the shipped evaluation of the base miniature model (see ``safediffusion.mini.eval_cache``).

    python scripts/dev/mini/base_eval.py [--config mini]

Evaluates ``model.pretrained`` (the shipped world) under the config's evaluation protocol and writes
``src/safediffusion/mini/weights/eval_cache/<key>.{json,safetensors}``, removing entries with other keys.
Re-run after any change to the world's weights or to the evaluation code (``tests/mini/test_eval_cache.py``
fails until then).
"""

from __future__ import annotations

import argparse
import json

from safediffusion.config import load_config, resolve_config_path
from safediffusion.mini import eval_cache
from safediffusion.mini.report import _evaluate, eval_protocol, grid_only, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mini")
    args = parser.parse_args()
    cfg = load_config(resolve_config_path(args.config))
    protocol = eval_protocol(cfg)
    key = eval_cache.evaluation_key(cfg.model.pretrained, protocol)
    if key is None:
        raise SystemExit(f"model.pretrained={cfg.model.pretrained!r} is not the shipped world; nothing to cache")
    result = grid_only(_evaluate(cfg.model.pretrained, protocol, progress=True))
    for old in eval_cache.SHIPPED_DIR.glob("*"):
        old.unlink()
    path = eval_cache.store(key, result, eval_cache.SHIPPED_DIR)
    print(json.dumps(summary(result), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
