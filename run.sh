#!/usr/bin/env bash
# One entry point for newcomers and CI.
#   bash run.sh demo   set up (first time) and run the course's main job on the shipped data
#   bash run.sh test   set up (first time) and run the whole test suite (fast mode)
# The environment lives in $I2V_VENV (default .venv). Torch: the CPU build pinned below is
# installed unless a torch is already importable there (GPU users: see README).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${I2V_VENV:-.venv}
TORCH_SPEC=${I2V_TORCH_SPEC:-torch==2.13.0}

setup() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  python -m pip install -q --upgrade pip
  python -c "import torch" 2>/dev/null || python -m pip install -q $TORCH_SPEC ${I2V_TORCH_PIP_ARGS:-}
  python -m pip install -q -e ".[course,dev]"
}

case "${1:-}" in
  demo)
    setup
    i2v demo "${@:2}"
    ;;
  test)
    setup
    export I2V_FAST=1
    # lint first (config in pyproject.toml): seconds, and a failure names file:line
    python -m ruff check .
    # the unit tests, then every notebook top to bottom in fast mode (nbval: cells must run; outputs not compared)
    python -m pytest -q tests notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 "${@:2}"
    ;;
  *)
    echo "usage: bash run.sh demo|test [extra args]" >&2
    exit 2
    ;;
esac
