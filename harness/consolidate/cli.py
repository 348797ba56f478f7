"""Turn any harness checkpoint into one plain file: ``python -m harness.consolidate CKPT OUT``.

``CKPT`` is a checkpoint folder (single/DDP ``state.pt``, FSDP2 DCP shards, or a DeepSpeed ZeRO
checkpoint), a pointer (``runs/x/checkpoints/best``) or a run folder. ``OUT`` receives what
``python -m harness.export CKPT OUT`` writes (``model.safetensors``: the whole classifier,
fp32; ``model.json``: class names, preprocessing, the config to rebuild it, the source) plus
``vjepa2_probe.pt`` (the probe head(s) in V-JEPA 2's eval layout: ``classifiers``, a list of
``module.``-prefixed state dicts, plus ``epoch``), which V-JEPA 2's own eval loads with ``val_only:
true`` (no optimizer state: it evaluates, it does not resume training). A multi-head
run exports its best head (by validation top-1) as the classifier; all heads go to
``vjepa2_probe.pt``. Needs neither DeepSpeed nor a process group to read it back:
:func:`harness.export.consolidate.load_consolidated` / :func:`harness.load_classifier`.
"""

from __future__ import annotations

import sys

from harness.core.errors import entry_point
from harness.core.options import source_and_out_parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = source_and_out_parser("harness-consolidate", __doc__, "checkpoint",
                                   "checkpoint folder, pointer or run folder")  # fmt: skip
    args = parser.parse_args(argv)
    from harness.export.consolidate import VJEPA2_PROBE_FILE, consolidate

    out = consolidate(args.checkpoint, args.out, args.weights)
    from harness.export.model_io import MODEL_FILE, WEIGHTS_FILE

    print(f"wrote {out / WEIGHTS_FILE}, {out / MODEL_FILE} and {out / VJEPA2_PROBE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
