#!/usr/bin/env bash
# One-step setup on a fresh machine: torch (the CPU build, unless there is an NVIDIA GPU or a torch already), then sim2real.
#
# GPU users: install the torch build for your CUDA first (https://pytorch.org/get-started/);
# this script keeps any torch that is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  # On Linux, PyPI's torch wheel is the multi-GB CUDA build; a machine without an NVIDIA GPU takes the CPU build
  # from PyTorch's own index (a local wheel or PyPI serve the rest). If that index cannot be reached, plain pip
  # decides (on the development machine a local CPU wheel satisfies torch==2.13.0).
  if [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 && \
     "$PY" -m pip install --quiet --timeout 30 --retries 1 torch==2.13.0 \
       --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple 2>/dev/null; then
    :
  else
    "$PY" -m pip install --quiet torch==2.13.0
  fi
fi
"$PY" -m pip install --quiet -e ".[dev]"
# pyenv only sees new console scripts (the `sim2real` command) after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
