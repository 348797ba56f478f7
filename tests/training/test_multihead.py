"""Several probe heads from one frozen-encoder pass, each on its own schedule (V-JEPA 2's
``multihead_kwargs``), started from and exported to V-JEPA 2's ``classifiers`` layout."""

import csv
import json

import pytest
import torch
from vjepa2.models.attentive_pooler import AttentiveClassifier as TheirClassifier

from harness.config import ConfigError, load_config
from harness.export.consolidate import VJEPA2_PROBE_FILE, consolidate, load_consolidated
from harness.models import create_encoder
from harness.training import Trainer
from tests.conftest import tiny_overrides
from tests.models.test_vjepa2_compat import EVAL_FIXTURES, vjepa2_eval_checkpoint

HEADS = (
    "optimization.heads=[{lr: 0.01, start_lr: 0.01, weight_decay: 0.0, final_weight_decay: 0.0},"
    "{lr: 0.0, start_lr: 0.0, final_lr: 0.0, weight_decay: 0.0, final_weight_decay: 0.0},"
    "{lr: 0.002, start_lr: 0.0, warmup: 0.5, weight_decay: 0.05, final_weight_decay: 0.1}]"
)


@pytest.fixture()
def probe_files(tmp_path):
    torch.manual_seed(3)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    torch.save({"encoder": encoder.state_dict()}, tmp_path / "encoder.pt")
    theirs = [TheirClassifier(embed_dim=192, num_heads=3, depth=2, num_classes=4) for _ in range(3)]
    torch.save(vjepa2_eval_checkpoint(theirs), tmp_path / "probes.pt")
    return tmp_path / "encoder.pt", tmp_path / "probes.pt", theirs


def header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_heads_share_one_encoder_pass_and_follow_their_own_schedules(demo_root, tmp_path, probe_files):
    encoder_file, probe_file, theirs = probe_files
    overrides = tiny_overrides(demo_root, tmp_path / "run", "meta.finetune_encoder=false", "optimization.epochs=1",
                               f"meta.pretrain_checkpoint={encoder_file}", f"meta.classifier_checkpoint={probe_file}",
                               "model.attn_pooler_depth=2", "model.attn_pooler_heads=3", HEADS)  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    heads = trainer.model.classifier.heads
    for ours, their in zip(heads, theirs):  # each head starts from its entry of the V-JEPA 2 file
        for key, value in their.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key
    calls = []
    trainer.model.encoder.register_forward_hook(lambda *args: calls.append(1))
    trainer.fit()
    steps = trainer.state.step
    assert len(calls) == steps + 2, "one encoder pass per step (plus one per validation batch: 8 videos / 4)"
    lrs = {group["head"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs[1] == 0.0 and lrs[0] > 0 and lrs[2] > 0
    for key, value in theirs[1].state_dict().items():  # lr 0, wd 0: head 1 has not moved
        assert torch.equal(heads[1].state_dict()[key], value), key
    assert not torch.equal(heads[0].linear.weight, theirs[0].linear.weight)
    assert {"loss_h0", "acc1_h2"} <= set(header(tmp_path / "run" / "log_r0.csv"))
    with open(tmp_path / "run" / "epochs.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    top1 = [float(row[f"val_top1_h{i}"]) for i in range(3)]
    best = int(row["best_head"])
    assert top1[best] == max(top1) and float(row["val_top1"]) == top1[best]

    # Export: the best head as a plain classifier; all heads in V-JEPA 2's layout, which its
    # (DDP-wrapped, hence ``module.``) classifiers load strictly.
    out = consolidate(tmp_path / "run" / "checkpoints" / "latest", tmp_path / "export")
    description = json.loads((out / "model.json").read_text())
    assert description["heads_trained"] == 3 and description["best_head"] == trainer.state.best_head
    model = load_consolidated(out)
    best_head = heads[trainer.state.best_head]
    for key, value in best_head.state_dict().items():
        torch.testing.assert_close(model.classifier.state_dict()[key], value, rtol=0, atol=0)
    # "Loads in V-JEPA 2" = its eval with val_only: true. Its load_checkpoint then reads exactly
    # the keys recorded from running it (tests/fixtures/vjepa2_eval) and loads entry i into its
    # DDP-wrapped head i with a strict load_state_dict; resuming training (val_only: false) also
    # reads AdamW and GradScaler states, which an export does not carry.
    probe = torch.load(out / VJEPA2_PROBE_FILE, weights_only=True)
    reads = json.loads((EVAL_FIXTURES / "load_checkpoint_reads.json").read_text())["two_heads"]
    assert set(reads["val_only"]) <= set(probe) and not set(reads["resume"]) <= set(probe)
    assert len(probe["classifiers"]) == len(heads)  # its zip() would drop heads silently
    tokens = torch.randn(2, 16, 192)
    for ours, state in zip(heads, probe["classifiers"]):
        wrapped = torch.nn.Module()  # what DistributedDataParallel holds: the head as .module
        wrapped.module = TheirClassifier(embed_dim=192, num_heads=3, depth=2, num_classes=4)
        wrapped.load_state_dict(state)  # strict, as its load_checkpoint calls it
        torch.testing.assert_close(wrapped.module.eval()(tokens), ours.eval()(tokens), rtol=0, atol=1e-5)


def test_several_heads_need_a_frozen_encoder(demo_root, tmp_path):
    with pytest.raises(ConfigError, match="several heads share one frozen-encoder pass"):
        load_config(None, tiny_overrides(demo_root, tmp_path, HEADS))  # tiny_overrides fine-tunes the encoder


def test_resumes_a_vjepa2_eval_run_from_its_latest_pt(demo_root, tmp_path, probe_files):
    """V-JEPA 2's eval resumes from ``<folder>/latest.pt``; so does the harness when a V-JEPA 2 run
    folder has no harness checkpoint: heads, AdamW moments and epoch carry over."""
    encoder_file, _, theirs = probe_files
    saved = vjepa2_eval_checkpoint(theirs, epoch=1)  # one AdamW step taken on each head
    (tmp_path / "run").mkdir()
    torch.save(saved, tmp_path / "run" / "latest.pt")
    overrides = tiny_overrides(demo_root, tmp_path / "run", "meta.finetune_encoder=false", "optimization.epochs=2",
                               f"meta.pretrain_checkpoint={encoder_file}", "model.attn_pooler_depth=2",
                               "model.attn_pooler_heads=3", HEADS)  # fmt: skip
    trainer = Trainer(load_config(None, overrides))
    assert (trainer.state.epoch, trainer.state.step) == (1, trainer.steps_per_epoch)
    for ours, their, opt in zip(trainer.model.classifier.heads, theirs, saved["opt"]):
        assert torch.equal(ours.linear.weight, their.linear.weight)
        index = [name for name, _ in their.named_parameters()].index("linear.weight")
        moments = trainer.optimizer.state[ours.linear.weight]
        assert torch.equal(moments["exp_avg"], opt["state"][index]["exp_avg"])
    trainer.fit()
    with open(tmp_path / "run" / "log_r0.csv", newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps[0] == trainer.steps_per_epoch + 1 and trainer.state.epoch == 2
