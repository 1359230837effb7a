#!/usr/bin/env bash
# The project's test command (README, CI): lint, then the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/python -m pytest -q "$@"
