"""Turn any harness checkpoint into one plain file: ``python -m harness.consolidate CKPT OUT``.

``CKPT`` is a checkpoint folder (single/DDP ``state.pt``, FSDP2 DCP shards, or a DeepSpeed ZeRO
checkpoint), a pointer (``runs/x/checkpoints/best``) or a run folder. ``OUT`` receives
``model.safetensors`` (the whole classifier: encoder + head, fp32), ``model.json`` (the config
to rebuild the model, the number of classes, the label map and the source) and
``vjepa2_probe.pt`` (the probe head(s) in V-JEPA 2's eval layout: ``classifiers``, a list of
``module.``-prefixed state dicts, plus ``epoch``), which V-JEPA 2's own eval loads. A multi-head
run exports its best head (by validation top-1) as the classifier; all heads go to
``vjepa2_probe.pt``. Needs neither DeepSpeed nor a process group to read it back:
:func:`load_consolidated`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import Config, config_from_dict
from harness.errors import entry_point
from harness.models.checkpoint_io import CheckpointError
from harness.parallel.strategy import STATE_FILE, load_model_state
from harness.training.checkpoint import damage, read_checkpoint_meta, resolve_checkpoint
from harness.training.ema import read_rank_files, whole_average
from harness.training.optim import clean_name

WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"
VJEPA2_PROBE_FILE = "vjepa2_probe.pt"


def read_model_state(checkpoint: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's (possibly trainable-only) state from a checkpoint of any strategy, offline."""
    strategy = meta["strategy"]
    if strategy == "fsdp":
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(checkpoint / "dcp", Path(tmp) / "state.pt")
            state = torch.load(Path(tmp) / "state.pt", map_location="cpu", weights_only=True)
        return state["model"]
    if strategy == "deepspeed":
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="deepspeed")
        # DeepSpeed records parameter names as named_parameters() gives them, wrappers included
        # (activation checkpointing, compile); state dicts use the plain names.
        return {clean_name(key): value for key, value in state.items()}
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)["model"]


def build_plain_model(config: Config, num_classes: int) -> nn.Module:
    """The single-device model of ``config`` (no compile, no wrapping) in fp32 on the CPU."""
    from harness.training.build import build_model

    plain = dataclasses.replace(config, model=dataclasses.replace(config.model, compile_model=False))
    return build_model(plain, num_classes)


def consolidate(checkpoint: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``out/model.safetensors``, ``out/model.json`` and ``out/vjepa2_probe.pt``; returns ``out``.

    ``weights="ema"`` (default) exports the moving average of the weights where the run kept one
    (``optimization.ema_decay``; what its evaluation used), ``"trained"`` the weights as trained.
    """
    from safetensors.torch import save_file

    folder = resolve_checkpoint(checkpoint)
    meta = read_checkpoint_meta(folder)
    if problem := damage(folder):
        raise CheckpointError(f"{folder} is damaged: {problem}")
    config = config_from_dict(meta["config"])
    # Every weight comes from the checkpoint: no pretrained or probe file is read again.
    config = dataclasses.replace(config, meta=dataclasses.replace(config.meta, classifier_checkpoint=None))
    model = build_plain_model(config, meta["num_classes"])
    load_model_state(model, read_model_state(folder, meta))
    average = whole_average(read_rank_files(folder)) if weights == "ema" else None
    if average:  # the average replaces the trained weights it tracks, whatever the strategy's shards
        parameters = {clean_name(name): p for name, p in model.named_parameters()}
        with torch.no_grad():
            for name, value in average.items():
                parameters[name].copy_(value)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heads = list(getattr(model.classifier, "heads", [model.classifier]))
    best = meta.get("best_head") or 0
    torch.save(
        {"classifiers": [{f"module.{k}": v.detach().float() for k, v in h.state_dict().items()} for h in heads],
         "epoch": meta["epoch"], "best_head": best},
        out / VJEPA2_PROBE_FILE,
    )  # fmt: skip
    saved_config = meta["config"]
    if len(heads) > 1:  # the export is the best head: a plain single-head classifier
        model.classifier = heads[best]
        saved_config = _single_head_config(saved_config, best)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    description = {
        "num_classes": meta["num_classes"],
        "label_map": dict(enumerate(meta.get("class_names") or map(str, range(meta["num_classes"])))),
        "source": str(folder.resolve()),
        "strategy": meta["strategy"],
        "step": meta["step"],
        "weights": "ema" if average else "trained",
        "heads_trained": len(heads),
        "best_head": best if len(heads) > 1 else None,
        "config": saved_config,
    }
    (out / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return out


def _single_head_config(values: dict[str, Any], head: int) -> dict[str, Any]:
    """The saved config of a multi-head run, reduced to head ``head`` (its schedule as the run's)."""
    values = json.loads(json.dumps(values))
    optimization = values["optimization"]
    optimization.update(optimization.pop("heads")[head])
    optimization["heads"] = []
    return values


def load_consolidated(folder: str | Path) -> nn.Module:
    """Rebuild the classifier from :func:`consolidate`'s output and load its weights strictly."""
    from safetensors.torch import load_file

    folder = Path(folder)
    description = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    config = config_from_dict(description["config"])
    # The weights come from the file: do not read the pretrained encoder again.
    config = dataclasses.replace(
        config, meta=dataclasses.replace(config.meta, pretrain_checkpoint=None, classifier_checkpoint=None)
    )
    model = build_plain_model(config, description["num_classes"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    return model


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="harness-consolidate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("checkpoint", help="checkpoint folder, pointer or run folder")
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--weights",
        choices=("ema", "trained"),
        default="ema",
        help="the moving average of the weights if the run kept one (default), or as trained",
    )
    args = parser.parse_args(argv)
    out = consolidate(args.checkpoint, args.out, args.weights)
    print(f"wrote {out / WEIGHTS_FILE} and {out / MODEL_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
