import math

import pytest
import torch
from vjepa2.utils.schedulers import WarmupCosineSchedule

from harness.models import AttentiveClassifier, VideoClassifier
from harness.training.optim import Schedule, param_groups
from tests.models.test_vit import tiny_encoder


def model(freeze: bool = False) -> VideoClassifier:
    encoder = tiny_encoder()
    return VideoClassifier(encoder, AttentiveClassifier(encoder.embed_dim, 5, num_heads=2), freeze_encoder=freeze)


def test_wsd_learning_rate_at_key_steps():
    s = Schedule(total_steps=100, lr=1.0, start_lr=0.1, final_lr=0.01, warmup_steps=10, anneal_steps=20)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(5) == pytest.approx(0.55)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(79) == pytest.approx(1.0), "stable until the decay starts"
    assert s.lr_at(80) == pytest.approx(1.0)
    assert s.lr_at(90) == pytest.approx(0.505)
    assert s.lr_at(100) == pytest.approx(0.01)


@pytest.mark.parametrize("warmup", [0, 10])
def test_cosine_learning_rate_is_vjepa2_warmup_cosine_schedule(warmup):
    """``shape="cosine"`` (harness protocol): a cosine from ``lr`` to ``final_lr`` over the steps
    after the warmup, step ``s`` being V-JEPA 2's ``WarmupCosineSchedule`` after ``s`` steps."""
    decay, lr, start_lr, final_lr = 100, 1.0, 0.1, 0.01
    total = warmup + decay
    s = Schedule(total_steps=total, lr=lr, start_lr=start_lr, final_lr=final_lr, warmup_steps=warmup, shape="cosine")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    theirs = WarmupCosineSchedule(optimizer, warmup, start_lr, lr, total, final_lr=final_lr)
    for step in range(1, total + 1):
        assert s.lr_at(step) == pytest.approx(theirs.step(), rel=1e-12, abs=0), step
    # The same curve written out at its landmarks: warmup end, a quarter, half and all the decay.
    assert s.lr_at(0) == pytest.approx(start_lr if warmup else lr)
    assert s.lr_at(warmup) == pytest.approx(lr)
    assert s.lr_at(warmup + decay // 4) == pytest.approx(final_lr + (lr - final_lr) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(warmup + decay // 2) == pytest.approx((lr + final_lr) / 2)
    assert s.lr_at(total) == pytest.approx(final_lr)
    assert s.lr_at(total + 5) == pytest.approx(final_lr), "stays at final_lr past the end"


def test_cosine_weight_decay_at_key_steps():
    s = Schedule(total_steps=100, lr=1.0, weight_decay=0.04, final_weight_decay=0.4)
    assert s.wd_at(0) == pytest.approx(0.04)
    assert s.wd_at(50) == pytest.approx(0.22)
    assert s.wd_at(100) == pytest.approx(0.4)
    assert s.wd_at(25) == pytest.approx(0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi / 4)))


def test_schedule_sets_group_values_with_scales():
    net = model()
    groups = param_groups(net, enc_lr_scale=0.1)
    optimizer = torch.optim.AdamW(groups)
    Schedule(total_steps=10, lr=2.0, weight_decay=0.5, final_weight_decay=0.5).apply(optimizer, 3)
    for group in optimizer.param_groups:
        encoder = group["names"][0].startswith("encoder.")
        assert group["lr"] == pytest.approx(0.2 if encoder else 2.0)
        assert group["weight_decay"] == (0.5 if group["wd_scale"] else 0.0)


def test_no_weight_decay_on_biases_norms_positions_and_queries():
    groups = param_groups(model())
    no_decay = {name for g in groups if g["wd_scale"] == 0 for name in g["names"]}
    decay = {name for g in groups if g["wd_scale"] == 1 for name in g["names"]}
    assert "classifier.pooler.query_tokens" in no_decay
    assert "encoder.blocks.0.norm1.weight" in no_decay and "encoder.blocks.0.attn.qkv.bias" in no_decay
    assert "encoder.blocks.0.attn.qkv.weight" in decay and "classifier.linear.weight" in decay
    assert all(not name.endswith(".bias") for name in decay)


def test_layer_decay_scales_by_depth():
    net = model()
    depth = len(net.encoder.blocks)
    groups = param_groups(net, enc_lr_scale=0.5, layer_decay=0.5)
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    assert scale["classifier.linear.weight"] == 1.0
    assert scale["encoder.norm.weight"] == pytest.approx(0.5)
    assert scale[f"encoder.blocks.{depth - 1}.mlp.fc1.weight"] == pytest.approx(0.5 * 0.5)
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5 * 0.5 ** (depth + 1))
    assert net.encoder.layer_id("blocks.3.attn.qkv.weight") == 4


def test_frozen_encoder_has_no_optimizer_state():
    net = model(freeze=True)
    groups = param_groups(net)
    names = [name for g in groups for name in g["names"]]
    assert names and all(name.startswith("classifier.") for name in names)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    clips = torch.randn(2, 3, 4, 32, 32)
    torch.nn.functional.cross_entropy(net(clips), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in net.encoder.parameters()), "frozen encoder gets no gradient"
    optimizer.step()
    state_params = {id(p) for p in optimizer.state}
    assert not state_params & {id(p) for p in net.encoder.parameters()}
    net.train()
    assert not net.encoder.training, "a frozen encoder stays in eval mode (no drop path)"
