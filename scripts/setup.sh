#!/usr/bin/env bash
# Create .venv with the pinned development environment and install safediffusion (editable).
# The torch + torchvision pair is installed first, pinned: letting pip resolve a bare `torch` (e.g. as a dependency of
# open_clip_torch or torchvision) pulls whatever build it finds, and an unmatched torchvision breaks imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.safediffusion-requirements
want=$(cat requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$(grep -E '^torch==' requirements-dev.txt)" \
    "$(grep -E '^torchvision==' requirements-dev.txt)"
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "environment ready: .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
