"""End-to-end training on CPU with real generated videos (seconds each)."""

import csv
import json

import pytest
import torch
from PIL import Image

from harness.config import load_config
from harness.evaluate.cli import main as evaluate_main
from harness.parallel.precision import Precision
from harness.training import Trainer
from tests.conftest import tiny_overrides


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_every_artefact_and_evaluate_agrees(demo_root, tmp_path):
    folder = tmp_path / "run"
    trainer = Trainer(load_config(None, tiny_overrides(demo_root, folder)))
    result = trainer.fit()
    steps = trainer.steps_per_epoch * 2
    assert trainer.steps_per_epoch == 24 // 4
    log = rows(folder / "log_r0.csv")
    assert [int(r["step"]) for r in log] == list(range(1, steps + 1))
    assert all(float(r["data_time"]) >= 0 and float(r["step_time"]) > 0 for r in log)
    assert float(log[0]["lr"]) == pytest.approx(0.001) and float(log[0]["grad_norm"]) > 0
    evals = rows(folder / "epochs.csv")
    assert len(evals) == 2 and all(int(r["val_count"]) == 8 for r in evals)
    first_epoch = log[: trainer.steps_per_epoch]
    mean_loss = sum(float(r["loss"]) for r in first_epoch) / len(first_epoch)  # equal batch sizes
    assert float(evals[0]["train_loss"]) == pytest.approx(mean_loss, rel=1e-6)
    predictions = rows(folder / "best_predictions.csv")
    assert len(predictions) == 8 and set(predictions[0]) >= {"video", "label", "label_name", "pred1", "name1", "score1"}
    names = ["right", "left", "down", "up"]
    assert all(r["label_name"] == names[int(r["label"])] and r["name1"] == names[int(r["pred1"])] for r in predictions)
    table = list(csv.reader(open(folder / "best_confusion.csv")))
    assert table[0] == ["true\\pred", *names] and [r[0] for r in table[1:]] == names
    confusion = [list(map(int, r[1:])) for r in table[1:]]
    assert sum(map(sum, confusion)) == 8 and all(sum(row) == 2 for row in confusion)
    assert Image.open(folder / "best_confusion.png").size[0] >= 400, "a labelled plot, not a bare bitmap"
    assert (
        json.loads(
            (folder / "checkpoints" / "latest")
            .resolve()
            .with_name((folder / "checkpoints" / "latest").read_text().strip())
            .joinpath("meta.json")
            .read_text()
        )["class_names"]
        == names
    )
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps"] == steps and set(summary["checkpoints"]) == {"latest", "best"}
    assert (folder / "config.yaml").is_file()

    code = evaluate_main(
        ["--config", str(folder / "config.yaml"), "--checkpoint", str(folder / "checkpoints" / "latest")]
    )
    assert code == 0
    metrics = json.loads(next(folder.glob("eval_*/metrics.json")).read_text())
    assert metrics["val_top1"] == result.top1 and metrics["val_count"] == 8, "same deterministic evaluation"


def test_frozen_encoder_trains_only_the_classifier(demo_root, tmp_path):
    from harness.models import create_encoder

    torch.manual_seed(5)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    torch.save({"encoder": encoder.state_dict()}, tmp_path / "pretrained.pt")
    folder = tmp_path / "probe"
    overrides = tiny_overrides(
        demo_root,
        folder,
        "meta.finetune_encoder=false",
        f"meta.pretrain_checkpoint={tmp_path / 'pretrained.pt'}",
        "optimization.epochs=1",
    )
    trainer = Trainer(load_config(None, overrides))
    trainer.fit()
    for name, value in encoder.state_dict().items():
        assert torch.equal(trainer.model.encoder.state_dict()[name], value), f"{name} changed"
    assert all(p.grad is None for p in trainer.model.encoder.parameters())
    optimized = {id(p) for p in trainer.optimizer.state}
    assert optimized and not optimized & {id(p) for p in trainer.model.encoder.parameters()}
    saved = torch.load(trainer.checkpoints.find("latest") / "state.pt", weights_only=True)["model"]
    assert not any(key.startswith("encoder.blocks") for key in saved), "the frozen encoder is not saved again"
    again = Trainer(load_config(None, overrides))  # resumes: encoder from the file, head from the checkpoint
    assert torch.equal(again.model.classifier.linear.weight, trainer.model.classifier.linear.weight)


def test_bfloat16_really_computes_in_bfloat16_on_cpu(demo_root, tmp_path):
    trainer = Trainer(load_config(None, tiny_overrides(demo_root, tmp_path / "bf16", "meta.dtype=bfloat16")))
    seen = {}
    block = trainer.model.encoder.blocks[0]
    block.attn.qkv.register_forward_hook(lambda m, i, out: seen.update(qkv=out.dtype))
    batch = next(iter(trainer.train_loader))
    loss_sum, *_ = trainer.train_step([batch])
    assert seen["qkv"] == torch.bfloat16
    assert trainer.model.classifier.linear.weight.dtype == torch.float32, "weights stay fp32"
    assert torch.isfinite(loss_sum)


def test_float16_uses_a_grad_scaler():
    precision = Precision("float16", torch.device("cpu"))
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with precision.autocast():
        out = model(torch.randn(3, 4))
    assert out.dtype == torch.float16
    precision.scale(out.float().pow(2).mean()).backward()
    from harness.parallel.strategy import Strategy

    before = model.weight.detach().clone()
    norm = Strategy(torch.device("cpu"), precision).optimizer_step(model, optimizer, 1.0)
    assert torch.isfinite(norm) and not torch.equal(before, model.weight)
    assert precision.state_dict()["scale"] > 0


def test_accumulation_matches_one_large_batch(demo_root, tmp_path):
    def one_step(batch_size, accumulation):
        overrides = tiny_overrides(
            demo_root,
            tmp_path / f"acc{accumulation}",
            f"data.batch_size={batch_size}",
            f"optimization.accumulation_steps={accumulation}",
            "optimization.ipe=1",
            "optimization.epochs=1",
            "data.val_datasets=[]",
        )
        trainer = Trainer(load_config(None, overrides))
        trainer.fit()
        return trainer.model.classifier.linear.weight.detach()

    torch.testing.assert_close(one_step(4, 1), one_step(2, 2), rtol=1e-4, atol=1e-6)


def test_full_finetune_recipe_options_run_together(demo_root, tmp_path):
    overrides = tiny_overrides(
        demo_root,
        tmp_path / "recipe",
        "optimization.mixup=0.8",
        "optimization.cutmix=1.0",
        "optimization.label_smoothing=0.1",
        "optimization.layer_decay=0.75",
        "optimization.ema_decay=0.9",
        "model.drop_path_rate=0.1",
        "data.repeated_aug=2",
        "data.num_clips=2",
        "data.val_num_clips=2",
        "data.num_views=2",
        "optimization.epochs=1",
    )
    trainer = Trainer(load_config(None, overrides))
    result = trainer.fit()
    assert result.count == 8 and 0 <= result.top1 <= 1
    rank_file = torch.load(trainer.checkpoints.find("latest") / "rank_r0.pt", weights_only=True)
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(rank_file["ema"]) == trained and all(v == {"shard": "none"} for v in rank_file["ema_layout"].values())
    scales = sorted({g["lr_scale"] for g in trainer.optimizer.param_groups})
    assert len(scales) > 3, "layer decay gives each depth its own learning rate"


def test_unreadable_validation_video_is_skipped_and_counted(demo_root, tmp_path):
    listing = tmp_path / "val.csv"
    lines = (demo_root / "val.csv").read_text().splitlines()
    absolute = [f"{demo_root / line.split()[0]} {line.split()[1]}" for line in lines]
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    listing.write_text("\n".join([*absolute, f"{tmp_path / 'broken.mp4'} 0"]) + "\n")
    extra = (f"data.val_datasets=[{listing}]", "optimization.epochs=1", "data.max_failure_fraction=0.5")
    overrides = tiny_overrides(demo_root, tmp_path / "run", *extra)
    trainer = Trainer(load_config(None, overrides))
    result = trainer.fit()
    assert result.count == 8, "the broken video is not counted (and no stand-in is)"
    assert trainer.val_set.stats()["failed"] == 1


def test_a_vjepa21_probe_reads_every_level_joined_along_channels(demo_root, tmp_path):
    # V-JEPA 2.1's hierarchical output: levels through their norms, concatenated along channels
    overrides = tiny_overrides(
        demo_root, tmp_path / "run", "model.model_name=vjepa2_1_vit_base_384", "model.depth=4",
        "model.out_layers=[1,3]", "meta.finetune_encoder=false", "optimization.epochs=1",
        "optimization.ipe=2",
    )  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    encoder = trainer.model.encoder
    assert encoder.level_concat == "channels" and encoder.feature_dim == 2 * 768
    assert trainer.model.classifier.linear.in_features == 2 * 768
    with torch.no_grad():
        clip = torch.randn(1, 3, 4, 32, 32)
        levels = encoder.forward_levels(clip)
        torch.testing.assert_close(encoder(clip), torch.cat(levels, dim=2))
    before = trainer.model.classifier.linear.weight.clone()
    trainer.fit()
    assert not torch.equal(trainer.model.classifier.linear.weight, before)
