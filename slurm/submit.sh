#!/bin/bash
# Snapshot the code and config now, then submit:  bash slurm/submit.sh CONFIG [overrides] [-- sbatch options]
# A job that waits in the queue then runs exactly the code it was submitted with.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEFAULT_PYTHON=$REPO/.venv/bin/python
[ -x "$DEFAULT_PYTHON" ] || DEFAULT_PYTHON=$(command -v python3)
PYTHON=${HARNESS_PYTHON:-$DEFAULT_PYTHON}
ARGS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do ARGS+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
RUN_DIR=$(cd "$REPO" && "$PYTHON" -m harness.config --config "${ARGS[@]}" --get folder)
case $RUN_DIR in /*) ;; *) RUN_DIR=$REPO/$RUN_DIR ;; esac
bash "$REPO/slurm/snapshot.sh" "$REPO" "$PYTHON" "$RUN_DIR/code" "${ARGS[@]}"
cd "$REPO" && sbatch "$@" --export=ALL,HARNESS_REPO="$REPO",HARNESS_PYTHON="$PYTHON" slurm/train.sbatch "${ARGS[@]}"
