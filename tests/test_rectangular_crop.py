"""``data.crop_size: [H, W]`` from one end to the other: the demo config trains on 32 x 48 crops,
evaluates, exports (safetensors, pt2, onnx; the hf format refuses a non-square crop in one line),
and ``harness.predict`` / ``harness.embed`` read the export back and cut the same clips."""

import csv
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CROP = [32, 48]  # height, width: 2 rows of 3 patches of 16 pixels


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_demo_trains_evaluates_exports_and_predicts_on_rectangular_crops(demo_root, tmp_path, capsys):
    import onnxruntime

    import harness
    from harness.config import load_config
    from harness.core.errors import UserError
    from harness.embed import read_index, read_shard
    from harness.embed.cli import main as embed
    from harness.evaluate.cli import main as evaluate
    from harness.export.writing import export
    from harness.predict.cli import main as predict
    from harness.training import Trainer

    run = tmp_path / "run"
    overrides = [f"folder={run}", f"data.datasets=[{demo_root / 'train.csv'}]",
                 f"data.val_datasets=[{demo_root / 'val.csv'}]", f"data.class_names={demo_root / 'classes.txt'}",
                 f"data.crop_size={CROP}", "data.num_workers=0", "data.decode_max_short_side=auto",
                 "optimization.epochs=1", "optimization.ipe=2", "optimization.warmup=0", "optimization.anneal=0",
                 "logging.progress_bar=false"]  # fmt: skip
    config = load_config(REPO / "configs" / "demo.yaml", overrides)
    trainer = Trainer(config)
    batch = next(iter(trainer.train_loader))
    assert batch.clips.shape[-2:] == (32, 48), "training clips are [..., C, T, H, W] with H x W the crop"
    assert trainer.model.encoder.grid_size == (4, 2, 3)
    trainer.fit()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_top1"] is not None and (run / "log_r0.csv").read_text().count("\n") == 1 + 2

    evaluated = tmp_path / "eval"
    assert evaluate(["--config", str(run / "config.yaml"), "--checkpoint", str(run), "--out", str(evaluated)]) == 0
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["val_count"] == 8 and metrics["val_top1"] == summary["best_top1"], metrics
    assert len(read_csv(evaluated / "predictions.csv")) == 8

    model, preprocessing = harness.load_classifier(run)
    assert preprocessing.crop_size == CROP and preprocessing.crop_hw == (32, 48)
    clips = torch.randn(2, 1, 3, preprocessing.frames_per_clip, 32, 48)
    with torch.no_grad():
        expected = model(clips)
    for fmt in ("safetensors", "pt2", "onnx"):
        out = tmp_path / fmt
        export(run, out, fmt)
        description = json.loads((out / "model.json").read_text())
        assert description["preprocessing"]["crop_size"] == CROP, f"{fmt}: the metadata carries [H, W]"
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
            assert session.get_inputs()[0].shape[-2:] == [32, 48], "the graph's input is H x W"
            logits = torch.from_numpy(session.run(None, {"clips": clips.numpy()})[0])
        elif fmt == "pt2":
            logits = torch.export.load(str(out / "model.pt2")).module()(clips)
        else:
            loaded, loaded_preprocessing = harness.load_classifier(out)
            assert loaded_preprocessing.crop_hw == (32, 48)
            with torch.no_grad():
                logits = loaded(clips)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4, msg=f"{fmt} reproduces the logits")
    with pytest.raises(UserError, match="the hf format takes square crops: this model's is 32x48"):
        export(run, tmp_path / "hf", "hf")

    videos = [str(demo_root / "val"), "--workers", "0", "--no-progress"]
    assert predict([str(tmp_path / "safetensors"), *videos, "--output", str(tmp_path / "exported.csv")]) == 0
    assert predict([str(run), *videos, "--output", str(tmp_path / "run.csv")]) == 0
    exported, direct = read_csv(tmp_path / "exported.csv"), read_csv(tmp_path / "run.csv")
    assert len(exported) == 8 and all(row["error"] == "" and row["name1"] for row in exported)
    for a, b in zip(exported, direct, strict=True):
        assert a["video"] == b["video"] and float(a["prob1"]) == pytest.approx(float(b["prob1"]), abs=1e-4)

    capsys.readouterr()
    features = tmp_path / "features"
    assert embed([str(tmp_path / "safetensors"), *videos, "--output", str(features), "--features", "tokens"]) == 0
    rows = read_index(features)
    tokens = read_shard(features, rows[0]["shard"])["tokens"]
    assert len(rows) == 8 and tuple(tokens.shape[1:5]) == (1, 4, 2, 3), "[K, T', H', W', D]: 2 rows of 3"
    assert json.loads((features / "embeddings.json").read_text())["request"]["preprocessing"]["crop_size"] == CROP


@pytest.mark.slow
def test_shards_train_and_evaluate_on_rectangular_crops(demo_shards, demo_root, tmp_path):
    # the crop is the transform's business: shard samples (train and validation) come out H x W too
    from harness.config import load_config
    from harness.training import Trainer
    from tests.conftest import tiny_overrides

    overrides = tiny_overrides(demo_root, tmp_path / "run", f"data.crop_size={CROP}", "optimization.epochs=1",
                               "data.datasets=[]", "data.val_datasets=[]",
                               f"data.shards=[{demo_shards / 'train' / 'manifest.json'}]",
                               f"data.val_shards=[{demo_shards / 'val' / 'manifest.json'}]")  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    batch = next(iter(trainer.train_loader))
    assert tuple(batch.clips.shape[-2:]) == tuple(CROP)
    trainer.fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["finished"] and summary["last"]["val_count"] == 8
