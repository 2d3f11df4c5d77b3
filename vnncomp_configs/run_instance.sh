#!/usr/bin/env bash
# VNN-COMP v1: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes sat/unsat/timeout/unknown/error (plus a counterexample on sat) to RESULTS_FILE, atomically.
# A stale RESULTS_FILE is replaced by "unknown" before anything is loaded; SIGTERM/SIGINT/SIGHUP
# leave "unknown" (or the answer, if known) and end every child process; the run ends within
# TIMEOUT + 2 s, counted from the start of this script (python is exec'd: same process).
set -u
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "run_instance.sh: usage: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT (got: $*)" >&2
    exit 2
fi
result="$5"
# first of all (builtins only, before any fork): replace a stale result with "unknown", and answer
# "unknown" to a signal until Python takes the signals over
trap 'printf "unknown\n" > "$result" 2>/dev/null; exit 0' HUP INT TERM
case "$result" in */*) dir="${result%/*}" ;; *) dir=. ;; esac
tmp="$dir/.${result##*/}.$$.tmp"
if ! { printf 'unknown\n' > "$tmp" && mv -f -- "$tmp" "$result"; } 2>/dev/null; then
    rm -f -- "$tmp" 2>/dev/null
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
# this checkout's code, whatever the (shared, cached) venv has installed
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
trap - HUP INT TERM
exec "$here/.venv/bin/python" -m qa_lirpa.vnncomp run "$@"
