#!/usr/bin/env bash
# Set up a fresh machine for harness: system FFmpeg libraries (for torchcodec) and a virtual
# environment in .venv with the package and its test extras installed. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HARNESS_VENV:-.venv}"

if ! command -v ffmpeg >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        echo "[bootstrap] installing FFmpeg (torchcodec decodes through its shared libraries)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
    else
        echo "[bootstrap] warning: no ffmpeg and no apt-get; install FFmpeg yourself for the torchcodec decoder" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment $VENV"
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# constraints.txt pins every package to the set CI tests (HARNESS_CONSTRAINTS= installs without it).
CONSTRAINTS="${HARNESS_CONSTRAINTS-constraints.txt}"
echo "[bootstrap] installing harness and its dependencies into $VENV${CONSTRAINTS:+ (pinned by $CONSTRAINTS)}"
"$VENV/bin/python" -m pip install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} -e ".[test]"
echo "[bootstrap] done: activate with '. $VENV/bin/activate'"
