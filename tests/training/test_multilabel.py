"""Multi-label classification: targets, losses, average precision (against a brute-force
reference and across real gloo ranks), the trainer end to end, shards, and predictions."""

from __future__ import annotations

import csv
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from harness.config import ConfigError, load_config
from harness.training import Trainer
from harness.training.multilabel import MultiLabelAccumulator, average_precision, multi_hot
from harness.training.objective import MultiLabelObjective, Objective, class_weights
from tests.conftest import tiny_overrides

MULTI = ("meta.multi_label=true",)


def reference_ap(scores: np.ndarray, truth: np.ndarray) -> float:
    """AP by definition: over every distinct threshold t (high to low), precision at t times the
    recall gained at t."""
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= threshold
        recall = truth[chosen].sum() / truth.sum()
        ap += (recall - previous_recall) * truth[chosen].sum() / chosen.sum()
        previous_recall = recall
    return ap


def test_multi_hot_and_average_precision():
    labels = torch.tensor([[1, 3, -1], [0, -1, -1], [2, 1, 0]])
    assert multi_hot(labels, 4).tolist() == [[0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert multi_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    # a hand-checked case: positives ranked 1st and 3rd -> (1 + 2/3) / 2
    assert average_precision(np.array([[0.9], [0.8], [0.7], [0.1]]), np.array([[1], [0], [1], [0]]))[
        0
    ] == pytest.approx((1 + 2 / 3) / 2)
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((200, 6)), 1)  # many ties
    truth = (rng.random((200, 6)) < 0.3).astype(float)
    truth[:, 5] = 0
    ap = average_precision(scores, truth)
    assert np.isnan(ap[5]), "a class without positives has no AP"
    assert ap[:5] == pytest.approx([reference_ap(scores[:, c], truth[:, c]) for c in range(5)])


def test_objectives_losses_targets_and_class_weights():
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 4), torch.tensor([[0, 2], [1, -1], [3, -1], [0, 1], [2, -1]])
    objective = MultiLabelObjective(4, label_smoothing=0.2, class_weights=torch.tensor([1.0, 2.0, 0.5, 1.0]))
    targets = objective.targets(labels)
    assert targets[0].tolist() == pytest.approx([0.85, 0.05, 0.85, 0.05]), "1 - 0.2 + 0.2/4 and 0.2/4"
    by_hand = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * torch.tensor([1.0, 2.0, 0.5, 1.0])
    assert objective.loss(logits, labels) == pytest.approx(by_hand.mean().item())
    assert [h.item() for h in objective.hits(torch.eye(4)[[2, 1, 0, 1, 0]] * 5, labels)] == [3, 5]
    single = Objective(4, class_weights=torch.tensor([1.0, 2.0, 0.5, 1.0]))
    hard = torch.tensor([0, 1, 3, 0, 2])
    expected = F.cross_entropy(logits, hard, weight=torch.tensor([1.0, 2.0, 0.5, 1.0]))
    assert single.loss(logits, hard) == pytest.approx(expected.item())
    assert single.loss(logits, hard, single.targets(hard)) == pytest.approx(
        -(single.targets(hard) * torch.tensor([1.0, 2.0, 0.5, 1.0]) * logits.log_softmax(-1)).sum(-1).mean().item()
    )
    auto = class_weights("auto", 3, np.array([6, 3, 0]))
    assert auto.tolist() == pytest.approx([0.5, 1.0, 1.0]), "N / (C x count); 1 for a class without videos"
    with pytest.raises(ConfigError, match="has 2 entries for 3 classes"):
        class_weights([1.0, 2.0], 3, None)


def _rank_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    logits, labels = _data()
    mine = slice(0, 7) if rank == 0 else slice(7, 20)  # uneven shares
    accumulator = MultiLabelAccumulator(5, torch.device("cpu"), rank, 2)
    accumulator.add(logits[mine][:4], labels[mine][:4], ["v"] * 4)
    accumulator.add(logits[mine][4:], labels[mine][4:], ["v"] * (len(logits[mine]) - 4))
    result = accumulator.result(dist.all_reduce)
    if rank == 0:
        torch.save({k: getattr(result, k) for k in ("mean_ap", "top1", "top5", "loss", "count", "macro_f1")}, out)
    dist.destroy_process_group()


def _data():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(20, 5, generator=generator)
    labels = torch.randint(0, 5, (20, 2), generator=generator)
    labels[::3, 1] = -1
    return logits, labels


def test_mean_ap_over_two_gloo_ranks_equals_one_process(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank_worker, args=(port, str(tmp_path / "r0.pt")), nprocs=2)
    logits, labels = _data()
    whole = MultiLabelAccumulator(5, torch.device("cpu"))
    whole.add(logits, labels, ["v"] * 20)
    single = whole.result(lambda tensor: tensor)
    ranked = torch.load(tmp_path / "r0.pt")
    assert ranked["count"] == single.count == 20
    for key in ("mean_ap", "top1", "top5", "loss", "macro_f1"):
        assert ranked[key] == pytest.approx(getattr(single, key)), key
    targets = multi_hot(labels, 5).numpy()
    assert single.mean_ap == pytest.approx(
        np.mean([reference_ap(logits[:, c].numpy(), targets[:, c]) for c in range(5)])
    )


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_multi_label_run_trains_reports_map_and_predicts_label_sets(multilabel_root, tmp_path, capsys):
    from harness.predict.cli import main as predict
    from harness.report.page import render

    folder = tmp_path / "run"
    extra = (*MULTI, "optimization.mixup=0.8", "optimization.cutmix=1.0", "optimization.label_smoothing=0.1",
             "optimization.class_weights=auto", "data.class_balanced_sampling=0.5", "optimization.epochs=1",
             "logging.tensorboard=true", "logging.wandb.enabled=true", "logging.wandb.mode=offline")  # fmt: skip
    Trainer(load_config(None, tiny_overrides(multilabel_root, folder, *extra))).fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.wandb_records import read_run

    board = EventAccumulator(str(folder / "tensorboard"))
    board.Reload()
    assert "val/map" in board.Tags()["scalars"] and not board.Tags()["images"], "mAP, no confusion image"
    (run_file,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    history = [row for row in read_run(run_file)["history"] if "val/map" in row]
    assert len(history) == 1 and not any("confusion" in key for key in history[0])
    epoch = rows(folder / "epochs.csv")[0]
    assert 0 < float(epoch["val_map"]) <= 1 and epoch["val_count"] == "12"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_metric"] == "val_map" and summary["best_top1"] == pytest.approx(float(epoch["val_map"]))
    per_class = rows(folder / "best_per_class.csv")
    assert list(per_class[0]) == ["class", "support", "ap", "precision", "recall", "f1"]
    listed = [line.split()[1] for line in (multilabel_root / "val.csv").read_text().splitlines()]
    support = [sum(str(c) in labels.split(",") for labels in listed) for c in range(4)]
    assert [int(row["support"]) for row in per_class] == support, "each video counts for each of its classes"
    predictions = rows(folder / "best_predictions.csv")
    assert any(";" in row["label"] for row in predictions), "videos with two labels"
    assert not (folder / "best_confusion.csv").exists(), "no confusion matrix for multi-label runs"
    assert (folder / "report" / "per_class.png") in render(folder)
    from harness.evaluate.cli import main as evaluate

    assert evaluate(["--config", str(folder / "config.yaml"), "--checkpoint", str(folder / "checkpoints" / "best"),
                     "--out", str(tmp_path / "eval"), "logging.tensorboard=false",
                     "logging.wandb.enabled=false"]) == 0  # fmt: skip
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["val_map"] == pytest.approx(float(epoch["val_map"])), "harness.evaluate scores it alike"

    capsys.readouterr()
    out = tmp_path / "p.csv"
    assert predict([str(folder), str(multilabel_root / "val"), "--output", str(out), "--threshold", "0.0"]) == 0
    predicted = rows(out)
    assert len(predicted) == 12 and all(len(row["labels"].split(";")) == 4 for row in predicted), "all at 0"
    capsys.readouterr()
    assert predict([str(folder), str(multilabel_root / "val"), "--output", str(out), "--threshold", "1.0"]) == 0
    assert all(row["labels"] == "" for row in rows(out)), "none reaches 1"
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(multilabel_root))]
    assert printed and all(": [none]" in line for line in printed)


def test_multi_label_data_needs_the_switch_and_names_where(multilabel_root, multilabel_shards, tmp_path):
    with pytest.raises(ConfigError, match=r"train.csv:3: 2 labels \(0,2\) on one line; .*meta.multi_label=true"):
        Trainer(load_config(None, tiny_overrides(multilabel_root, tmp_path / "a")))
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{multilabel_shards / 'train/manifest.json'}]",
              f"data.val_shards=[{multilabel_shards / 'val/manifest.json'}]", "optimization.epochs=1")  # fmt: skip
    with pytest.raises(ConfigError, match=r"manifest.json: the shards are multi-label"):
        Trainer(load_config(None, tiny_overrides(multilabel_root, tmp_path / "b", *shards)))
    with pytest.raises(ConfigError, match="class_balanced_sampling draws from listings"):
        load_config(None, tiny_overrides(multilabel_root, tmp_path / "c", *shards, "data.class_balanced_sampling=1"))
    for value, message in (("heavy", "neither 'auto' nor a list"), ("[0, 0]", "not all 0")):
        with pytest.raises(ConfigError, match=message):
            load_config(None, tiny_overrides(multilabel_root, tmp_path / "d", f"optimization.class_weights={value}"))
    for value in ("small", "-5"):
        with pytest.raises(ConfigError, match=r"data.decode_max_short_side: .* neither 'auto', 0"):
            load_config(None, tiny_overrides(multilabel_root, tmp_path / "e", f"data.decode_max_short_side={value}"))


def test_multi_label_shards_carry_the_label_lists(multilabel_root, multilabel_shards, tmp_path):
    import tarfile

    manifest = json.loads((multilabel_shards / "train" / "manifest.json").read_text())
    assert manifest["multi_label"] is True
    shard = multilabel_shards / "train" / manifest["shards"][0]["name"]
    with tarfile.open(shard) as tar:
        labels = [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".cls")]
    listed = {line.split()[1] for line in (multilabel_root / "train.csv").read_text().splitlines()}
    assert set(labels) <= listed and any("," in label for label in labels)
    shards = ("data.datasets=[]", "data.val_datasets=[]", f"data.shards=[{multilabel_shards / 'train/manifest.json'}]",
              f"data.val_shards=[{multilabel_shards / 'val/manifest.json'}]", "optimization.epochs=1",
              "optimization.class_weights=auto", *MULTI)  # fmt: skip
    trainer = Trainer(load_config(None, tiny_overrides(multilabel_root, tmp_path / "run", *shards)))
    assert trainer.objective.class_weights is not None, "auto weights from the manifests' histograms"
    result = trainer.fit()
    assert result.mean_ap is not None and result.count == 12
