#!/usr/bin/env bash
# VNN-COMP v1: install qa-lirpa (a cached venv under ~/.cache/qa-lirpa, .venv links to it; the
# scripts run this checkout's code through PYTHONPATH).
set -euo pipefail
if [ "$#" -ne 1 ] || [ "$1" != "v1" ]; then
    echo "install_tool.sh: expected exactly one argument 'v1', got: $*" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
make install
export PYTHONPATH="$PWD"     # this checkout's code (nothing is installed into the shared venv)
.venv/bin/python -c "import qa_lirpa, onnxruntime; qa_lirpa.auto_lirpa()" && echo "qa-lirpa installed"
