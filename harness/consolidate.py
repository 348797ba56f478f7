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
:func:`load_consolidated` / :func:`harness.load_classifier`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import entry_point
from harness.export.cli import add_weights_option, write_export

if TYPE_CHECKING:
    from torch import nn

VJEPA2_PROBE_FILE = "vjepa2_probe.pt"


def consolidate(checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``out/model.safetensors``, ``out/model.json`` and ``out/vjepa2_probe.pt``; returns ``out``.

    ``weights="ema"`` (default) exports the moving average of the weights where the run kept one
    (``optimization.ema_decay``; what its evaluation used), ``"trained"`` the weights as trained.
    """
    import torch

    from harness.export.formats import publish
    from harness.export.model_io import from_trained, read_trained_model

    out = Path(out)
    trained = read_trained_model(checkpoint, weights)
    heads = list(getattr(trained.model.classifier, "heads", [trained.model.classifier]))
    write_export(*from_trained(trained), out, "safetensors")
    probe = {
        "classifiers": [{f"module.{k}": v.detach().float() for k, v in h.state_dict().items()} for h in heads],
        "epoch": trained.meta["epoch"],
        "best_head": trained.meta.get("best_head") or 0,
    }
    publish(out / VJEPA2_PROBE_FILE, lambda path: torch.save(probe, path))
    return out


def load_consolidated(folder: str | Path) -> nn.Module:
    """Rebuild the classifier from :func:`consolidate`'s output and load its weights strictly."""
    from harness.export.model_io import load_exported

    return load_exported(folder)[0]


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="harness-consolidate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("checkpoint", help="checkpoint folder, pointer or run folder")
    parser.add_argument("out", help="output folder")
    add_weights_option(parser)
    args = parser.parse_args(argv)
    out = consolidate(args.checkpoint, args.out, args.weights)
    from harness.export.model_io import MODEL_FILE, WEIGHTS_FILE

    print(f"wrote {out / WEIGHTS_FILE}, {out / MODEL_FILE} and {out / VJEPA2_PROBE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
