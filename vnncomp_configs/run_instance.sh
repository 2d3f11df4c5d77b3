#!/usr/bin/env bash
# VNN-COMP v1: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes sat/unsat/timeout/unknown/error (plus a counterexample on sat) to RESULTS_FILE, atomically.
set -u
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "run_instance.sh: usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT (got: $*)" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
exec "$here/.venv/bin/python" -m qa_lirpa.vnncomp run "$@"
