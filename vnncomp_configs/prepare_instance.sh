#!/usr/bin/env bash
# VNN-COMP v1: prepare_instance.sh v1 CATEGORY ONNX VNNLIB
# Unpacks .gz files into a cache and checks that the instance can be verified (load the model and
# the property, build the verification problem; no search); never kills processes it did not
# start. Non-zero exit skips the category.
set -u
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then
    echo "prepare_instance.sh: usage: prepare_instance.sh v1 CATEGORY ONNX VNNLIB (got: $*)" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
# this checkout's code, whatever the (shared, cached) venv has installed
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$here/.venv/bin/python" -m qa_lirpa.vnncomp prepare "$@"
