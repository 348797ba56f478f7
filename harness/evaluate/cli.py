"""Evaluate a trained checkpoint: ``python -m harness.evaluate --config CFG --checkpoint PATH``.

``PATH`` is a harness checkpoint folder, a pointer (``runs/x/checkpoints/best``), a run folder
(its best, else latest checkpoint), or a V-JEPA 2 attentive-probe file (``classifiers`` list;
the encoder then comes from ``meta.pretrain_checkpoint``). Runs the same deterministic
multi-view evaluation as training and writes metrics, predictions and the confusion matrix.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from harness.config import ConfigError, argument_parser, config_from_args
from harness.core.errors import RunFailed, UserError, entry_point
from harness.core.fileio import check_output_folder

log = logging.getLogger("harness.evaluate")


def _classes(checkpoint: Path, config) -> tuple[int, list[str] | None]:
    """Number of classes and their names: the checkpoint's, else the config's."""
    from harness.models.checkpoint_io import classifier_state, read_checkpoint
    from harness.training.classes import resolve_class_names
    from harness.training.state.checkpoint import read_checkpoint_meta

    if checkpoint.is_dir():
        meta = read_checkpoint_meta(checkpoint)
        return int(meta["num_classes"]), meta.get("class_names") or resolve_class_names(config)
    count = int(classifier_state(read_checkpoint(checkpoint))["linear.weight"].shape[0])
    return count, resolve_class_names(config)


def _read_newest(pointer: str, read, checkpoint: Path | None = None, tries: int = 3):
    """``(folder, read(folder))`` for the checkpoint ``pointer`` names (``checkpoint``: the one it
    named before). A running trainer may replace that checkpoint and delete it mid-read: when the
    read fails and the pointer names another checkpoint by then, read the newer one."""
    from harness.models.checkpoint_io import CheckpointError
    from harness.training.state.checkpoint import resolve_checkpoint

    checkpoint = checkpoint or resolve_checkpoint(pointer)
    for _ in range(tries - 1):
        try:
            return checkpoint, read(checkpoint)
        except CheckpointError:
            newest = resolve_checkpoint(pointer)
            if newest == checkpoint:
                raise
            log.warning("%s was replaced by %s while being read (the run is training): reading that", checkpoint,
                        newest)  # fmt: skip
            checkpoint = newest
    return checkpoint, read(checkpoint)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argument_parser("harness-evaluate", __doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, pointer, run folder or probe file")
    parser.add_argument("--out", default=None, help="output folder (default: <folder>/eval_<checkpoint>)")
    args = parser.parse_args(argv)
    if args.out:  # before any work
        check_output_folder(args.out, UserError, "--out")
    config = config_from_args(args)
    # (imported here: --help and argument errors answer without importing torch)
    from harness.models import load_classifier
    from harness.training import assemble
    from harness.training.checks import check_labels
    from harness.training.classes import display_names
    from harness.training.evaluation import evaluate, write_eval_artefacts
    from harness.training.multilabel import MultiLabelObjective
    from harness.training.state.resume import load_checkpoint
    from harness.training.tracking.logger import setup_console

    strategy = assemble.build_strategy_from_config(config)
    setup_console(config.logging.level, strategy.is_main)
    checkpoint, (num_classes, names) = _read_newest(args.checkpoint, lambda path: _classes(path, config))
    val_set = assemble.build_val_dataset(config, names)
    if val_set is None:
        raise ConfigError("data.val_datasets (or data.val_shards) is empty: nothing to evaluate")
    names = display_names(names, num_classes)
    check_labels(config, num_classes, None, val_set)
    model = assemble.build_model(config, num_classes)
    model, _ = strategy.prepare(model, lambda _: None)
    if checkpoint.is_dir():

        def load(path: Path) -> dict:
            return load_checkpoint(path, strategy, model, None, config, num_classes)

        checkpoint, _ = _read_newest(args.checkpoint, load, checkpoint)
    else:
        classifier = strategy.unwrap(model).classifier
        for index, head in enumerate(getattr(classifier, "heads", [classifier])):
            log.info(load_classifier(head, checkpoint, index=index).summary())
    loader = assemble.build_val_loader(config, strategy, val_set)
    objective = MultiLabelObjective(num_classes) if config.meta.multi_label else None  # BCE and mAP
    result, accumulator = evaluate(model, loader, strategy, num_classes, config.logging.progress_bar,
                                   num_views=config.data.num_views, objective=objective)  # fmt: skip
    out = Path(args.out) if args.out else Path(config.folder) / f"eval_{checkpoint.name}"
    if strategy.is_main:
        out.mkdir(parents=True, exist_ok=True)
    strategy.barrier()
    paths, _ = write_eval_artefacts(result, accumulator, strategy, out, "", names)
    if strategy.is_main:
        metrics = {**result.as_dict(), "checkpoint": str(checkpoint), "unreadable_videos": val_set.stats()["failed"]}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        print(f"{result.describe()} over {result.count} videos\n"
              f"wrote {out / 'metrics.json'}, " + ", ".join(str(p) for p in paths))  # fmt: skip
    strategy.close()
    if result.count == 0:
        raise RunFailed(f"0 videos were evaluated: every one was unreadable (see the warnings above); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
