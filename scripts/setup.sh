#!/usr/bin/env bash
# One-step setup on a fresh machine: torch (CPU build unless you already have one), then sim2real.
#
# GPU users: install the torch build for your CUDA first (https://pytorch.org/get-started/);
# this script keeps any torch that is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # torch==2.13.0 resolves to the CPU build here; any looser requirement would pull multi-GB CUDA wheels.
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[dev]"
# pyenv only sees new console scripts (the `sim2real` command) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
