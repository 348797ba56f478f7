#!/bin/bash
# Copy the code and the resolved config into a run folder:  snapshot.sh REPO PYTHON SNAPSHOT CONFIG [overrides]
set -euo pipefail
REPO=$1 PYTHON=$2 SNAPSHOT=$3 CONFIG=$4
shift 4
mkdir -p "$SNAPSHOT"
for item in harness configs ds_configs slurm setup.py; do
    [ -e "$REPO/$item" ] && cp -r "$REPO/$item" "$SNAPSHOT/"
done
(cd "$REPO" && git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null) > "$SNAPSHOT/git.txt" || true
(cd "$REPO" && "$PYTHON" -m harness.config --config "$CONFIG" --save "$SNAPSHOT/config.yaml" "$@")
echo "[harness] code and config snapshot in $SNAPSHOT"
