"""Training conventions: heads of a grid train as they would alone, and ``protocol: vjepa2``
follows V-JEPA 2's probe eval step for step (its own schedulers and modules from cc-vjepa2)."""

import logging
import math

import pytest
import torch
from vjepa2.models.attentive_pooler import AttentiveClassifier as TheirClassifier
from vjepa2.models.vision_transformer import vit_tiny as their_vit_tiny
from vjepa2.utils.schedulers import CosineWDSchedule, WarmupCosineSchedule

from harness.config import load_config
from harness.models import create_encoder
from harness.parallel.head_steps import HeadScaler, clip_per_head, head_parameter_sets
from harness.parallel.precision import Precision
from harness.training import Trainer
from harness.training.metrics import RunningSums
from harness.training.optim import HeadSchedules, Schedule, build_adamw, param_groups
from harness.training.protocol import warmup_steps
from tests.conftest import tiny_overrides
from tests.models.test_vjepa2_compat import vjepa2_eval_checkpoint

# (lr, start_lr, final_lr, warmup epochs, weight_decay, final_weight_decay): a rising and a
# falling weight decay, a truncated warmup (0.5 x 3 steps = 1.5 -> 1), a warmup from above.
GRID = [
    (0.01, 0.001, 1e-4, 0.5, 0.05, 0.2),
    (0.003, 0.003, 0.0, 0.0, 0.1, 0.01),
    (0.001, 0.004, 0.0005, 1.0, 0.0, 0.0),
]


def head_yaml(grid) -> str:
    keys = ("lr", "start_lr", "final_lr", "warmup", "weight_decay", "final_weight_decay")
    return "[" + ",".join("{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, head)) + "}" for head in grid) + "]"


@pytest.mark.parametrize("head", GRID)
def test_vjepa2_schedule_is_its_schedulers_stepped_before_each_forward(head):
    lr, start_lr, final_lr, warmup, wd, final_wd = head
    ipe, epochs = 3, 2
    total, warm = epochs * ipe, warmup_steps("vjepa2", warmup, ipe)
    assert warm == int(warmup * ipe)
    ours = Schedule(total, lr, start_lr, final_lr, warm, 0, wd, final_wd, shape="cosine", protocol="vjepa2")
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param])
    their_lr = WarmupCosineSchedule(optimizer, warm, start_lr, lr, total, final_lr=final_lr)
    their_wd = CosineWDSchedule(optimizer, wd, total, final_wd=final_wd)
    mine = build_adamw([{"params": [torch.nn.Parameter(torch.zeros(1))]}], (0.9, 0.999), 1e-8, torch.device("cpu"))
    for step in range(total):
        their_lr.step(), their_wd.step()  # eval.py: schedulers first, then the forward
        assert ours.apply(mine, step) == (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"])
    assert ours.lr_at(total) == final_lr  # the last step reaches final_lr


def test_harness_protocol_keeps_its_conventions():
    assert warmup_steps("harness", 0.5, 3) == 2 and warmup_steps("vjepa2", 0.5, 3) == 1
    schedule = Schedule(10, 0.1, 0.0, 0.0, 2, 0, shape="cosine")
    assert schedule.apply(build_adamw([{"params": [torch.nn.Parameter(torch.ones(1))]}], (0.9, 0.99), 1e-8,
                                      torch.device("cpu")), 0)[0] == 0.0  # fmt: skip


def test_vjepa2_protocol_decays_every_probe_tensor():
    model = torch.nn.Module()
    model.encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=1).requires_grad_(False)
    model.classifier = TheirClassifier(embed_dim=192, num_heads=3, depth=1, num_classes=4)
    ours = param_groups(model)
    assert {g["wd_scale"] for g in ours} == {0, 1}
    everything = param_groups(model, decay_all=True)
    assert len(everything) == 1 and everything[0]["wd_scale"] == 1
    assert "classifier.pooler.query_tokens" in everything[0]["names"]


def test_each_head_is_clipped_on_its_own_norm():
    torch.manual_seed(0)
    heads = [torch.nn.Linear(4, 3) for _ in range(3)]
    alone = [torch.nn.Linear(4, 3) for _ in range(3)]
    for head, copy in zip(heads, alone):
        copy.load_state_dict(head.state_dict())
    groups = [{"params": list(h.parameters()), "head": i} for i, h in enumerate(heads)]
    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert [len(s) for s in head_parameter_sets(optimizer)] == [2, 2, 2]
    inputs = torch.randn(5, 4)
    for scale, (head, copy) in enumerate(zip(heads, alone), 1):
        (scale * 10 * head(inputs).square().sum()).backward()
        (scale * 10 * copy(inputs).square().sum()).backward()
    norm = clip_per_head(optimizer, 0.5)
    norms = [torch.nn.utils.clip_grad_norm_(list(copy.parameters()), 0.5) for copy in alone]
    assert torch.equal(norm, torch.linalg.vector_norm(torch.stack(norms)))
    for head, copy in zip(heads, alone):
        for mine, theirs in zip(head.parameters(), copy.parameters()):
            assert torch.equal(mine.grad, theirs.grad)
    assert clip_per_head(optimizer, None) is None


def test_training_accuracy_is_the_best_heads_under_vjepa2():
    sums = RunningSums(torch.device("cpu"), heads=2, best_head=True)
    sums.add(torch.tensor(4.0), torch.tensor([2.0, 4.0]), 4, None, 0.0, 0.0, torch.tensor([[2.0, 1.0], [2.0, 3.0]]))
    means = sums.means()
    assert means["acc1"] == 0.75 == means["acc1_h1"]
    assert RunningSums(torch.device("cpu"), heads=1, best_head=True).means()["acc1"] is None


@pytest.fixture()
def probe_files(tmp_path):
    torch.manual_seed(3)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2)
    torch.save({"encoder": encoder.state_dict()}, tmp_path / "encoder.pt")
    theirs = [TheirClassifier(embed_dim=192, num_heads=3, depth=1, num_classes=4) for _ in GRID]
    torch.save(vjepa2_eval_checkpoint(theirs), tmp_path / "probes.pt")
    return tmp_path / "encoder.pt", tmp_path / "probes.pt"


def grid_overrides(demo_root, folder, probe_files, *extra):
    encoder_file, probe_file = probe_files
    return tiny_overrides(demo_root, folder, "meta.finetune_encoder=false", "optimization.epochs=1",
                          f"meta.pretrain_checkpoint={encoder_file}", f"meta.classifier_checkpoint={probe_file}",
                          "model.attn_pooler_heads=3", "optimization.clip_grad=0.05", "logging.log_every=100",
                          *extra)  # fmt: skip


def single_head(index: int) -> list[str]:
    keys = ("lr", "start_lr", "final_lr", "warmup", "weight_decay", "final_weight_decay")
    return [f"optimization.{k}={v}" for k, v in zip(keys, GRID[index])] + [f"meta.classifier_index={index}"]


# float16 on a CPU is slow (no fp16 matmul kernels): that case is marked slow.
FLOAT16 = pytest.param("vjepa2", "float16", marks=pytest.mark.slow)


@pytest.mark.parametrize(("protocol", "dtype"), [("harness", "float32"), ("vjepa2", "float32"), FLOAT16])
def test_a_grid_trains_each_head_bit_identically_to_that_head_alone(demo_root, tmp_path, probe_files, protocol, dtype):
    """Clipping (0.05: every step clips), schedules, decay and float16 loss scaling per head: a
    3-head grid's head i ends bit-identical to a 1-head run with head i's settings (float16: its
    own GradScaler) on the same tokens and batches."""
    extra = [f"optimization.protocol={protocol}", "optimization.lr_schedule=cosine", f"meta.dtype={dtype}"]
    grid = Trainer(load_config(None, grid_overrides(demo_root, tmp_path / "grid", probe_files, *extra,
                                                    f"optimization.heads={head_yaml(GRID)}")))  # fmt: skip
    grid.fit()
    scaler = grid.strategy.precision.scaler
    assert (scaler is not None) == (dtype == "float16") and getattr(scaler, "per_head", dtype == "float32")
    for index in range(len(GRID)):
        overrides = grid_overrides(demo_root, tmp_path / f"alone{index}", probe_files, *extra, *single_head(index))
        alone = Trainer(load_config(None, overrides))
        alone.fit()
        mine, theirs = grid.model.classifier.heads[index].state_dict(), alone.model.classifier.state_dict()
        for key, value in theirs.items():
            assert torch.equal(mine[key], value), (index, key)
        if scaler is not None:  # the head's loss scale went as its own GradScaler's
            assert scaler.scales[index].item() == alone.strategy.precision.scaler.get_scale()


def test_one_nan_head_skips_its_step_alone(demo_root, tmp_path, probe_files, caplog):
    trainer = Trainer(load_config(None, grid_overrides(demo_root, tmp_path / "grid", probe_files,
                                                       f"optimization.heads={head_yaml(GRID)}")))  # fmt: skip
    heads = trainer.model.classifier.heads
    before = [{k: v.clone() for k, v in head.state_dict().items()} for head in heads]
    heads[1].pooler.register_forward_hook(lambda module, args, out: out * float("nan"))
    with caplog.at_level(logging.WARNING):
        trainer.fit()
    assert "in probe heads [1]: their step skipped" in caplog.text and trainer.state.skipped_steps == 0
    assert all(torch.equal(heads[1].state_dict()[k], v) for k, v in before[1].items())
    assert not torch.equal(heads[0].linear.weight, before[0]["linear.weight"])
    assert trainer.optimizer.state.get(heads[1].linear.weight, {}) == {}


def eval_file_overrides(tmp_path, demo_root, grid) -> list[str]:
    """V-JEPA 2's k400 eval file shrunk to the demo data and a vit_tiny encoder, with ``grid`` as
    its ``multihead_kwargs``; 3 iterations per epoch, 2 epochs."""
    from tests.test_vjepa2_configs import small_eval_overrides

    return [
        *small_eval_overrides(tmp_path, demo_root, probe_blocks=1),
        "experiment.data.num_segments=2",
        "experiment.data.num_views_per_segment=1",
        "experiment.optimization.num_epochs=2",
        f"experiment.optimization.multihead_kwargs={head_yaml(grid)}",
        "optimization.ipe=3",
        "meta.dtype=float32",
    ]


def test_vjepa2_eval_file_trains_every_head_as_its_eval_py_does(tmp_path, demo_root, caplog):
    """The translated eval file through the harness's training path against V-JEPA 2's own
    classifier, AdamW per head and schedulers, driven in its eval.py's order (schedulers step,
    forward, loss, backward, step, zero_grad) on the same frozen tokens, labels and initial heads:
    every head's LR and WD equal at every step, and its weights after 6 steps."""
    from tests.test_vjepa2_configs import FIXTURES

    torch.manual_seed(0)
    encoder = their_vit_tiny(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=True)
    encoder.blocks = encoder.blocks[:2]  # a 2-block encoder (model.depth=2) is enough: it is frozen
    torch.save({"target_encoder": encoder.state_dict()}, tmp_path / "vitt.pt")
    overrides = [*eval_file_overrides(tmp_path, demo_root, GRID), "model.depth=2"]
    config = load_config(FIXTURES / "eval_vitl_k400.yaml", overrides)
    assert config.optimization.protocol == "vjepa2" and config.optimization.clip_grad is None
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config)
    assert "protocol: vjepa2" in caplog.text
    heads = trainer.model.classifier.heads
    theirs = [TheirClassifier(embed_dim=192, num_heads=3, depth=1, num_classes=4) for _ in GRID]
    for mine, their in zip(heads, theirs):
        their.load_state_dict(mine.state_dict(), strict=True)
    tokens, labels, rates = [], [], []
    trainer.model.classifier.register_forward_pre_hook(
        lambda module, args: tokens.append(args[0].detach().clone()) if module.training else None
    )
    trainer.optimizer.register_step_pre_hook(lambda optimizer, *_: rates.append(
        [(g["lr"], g["weight_decay"]) for g in sorted(optimizer.param_groups, key=lambda g: g["head"])]))  # fmt: skip
    train_step = trainer.train_step
    trainer.train_step = lambda batches: labels.append(batches[0].labels.clone()) or train_step(batches)
    trainer.fit()
    total = 2 * 3
    assert len(tokens) == len(labels) == len(rates) == total

    # V-JEPA 2's eval.py: one AdamW per head over one group of all its tensors, its schedulers.
    optimizers = [torch.optim.AdamW([{"params": their.parameters()}]) for their in theirs]
    lr_schedules = [WarmupCosineSchedule(o, int(h[3] * 3), h[1], h[0], total, final_lr=h[2])
                    for o, h in zip(optimizers, GRID)]  # fmt: skip
    wd_schedules = [CosineWDSchedule(o, h[4], total, final_wd=h[5]) for o, h in zip(optimizers, GRID)]
    criterion = torch.nn.CrossEntropyLoss()
    for step in range(total):
        [s.step() for s in lr_schedules]
        [s.step() for s in wd_schedules]
        outputs = [their(tokens[step]) for their in theirs]
        [criterion(output, labels[step]).backward() for output in outputs]
        assert rates[step] == [(o.param_groups[0]["lr"], o.param_groups[0]["weight_decay"]) for o in optimizers]
        [o.step() for o in optimizers]
        [o.zero_grad() for o in optimizers]
    assert all(math.isclose(r[0], h[2]) for r, h in zip(rates[-1], GRID))  # final_lr on the last step
    for mine, their in zip(heads, theirs):
        for key, value in their.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_head_schedules_values_follow_the_protocol():
    main = Schedule(6, 0.1, shape="cosine", protocol="vjepa2")
    schedules = HeadSchedules(main, [main, Schedule(6, 0.2, shape="cosine", protocol="vjepa2")])
    assert schedules.values(5) == [(0.0, 0.0), (0.0, 0.0)]


def test_head_scaler_is_a_gradscaler_per_head():
    """One head's overflow skips and halves that head only; the other steps as with its own
    ``torch.amp.GradScaler``; the state round-trips through a checkpoint."""
    torch.manual_seed(0)
    heads = [torch.nn.Linear(3, 2) for _ in range(2)]
    alone = torch.nn.Linear(3, 2)
    alone.load_state_dict(heads[0].state_dict())
    groups = [{"params": list(h.parameters()), "head": i} for i, h in enumerate(heads)]
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    scaler = HeadScaler(2, torch.device("cpu"), lambda tensor: tensor)
    theirs, their_scaler = torch.optim.AdamW(alone.parameters(), lr=0.1), torch.amp.GradScaler("cpu")
    inputs = torch.randn(4, 3)
    losses = torch.stack([heads[0](inputs).square().mean(), heads[1](inputs).sum() * float("inf")])
    scaler.scale(losses).backward()
    their_scaler.scale(alone(inputs).square().mean()).backward()
    before = heads[1].weight.detach().clone()
    for s, o in ((scaler, optimizer), (their_scaler, theirs)):
        s.unscale_(o), s.step(o), s.update()
    assert torch.equal(heads[0].weight, alone.weight) and torch.equal(heads[1].weight, before)
    assert scaler.scales.tolist() == [their_scaler.get_scale(), 2.0**15]
    restored = HeadScaler(2, torch.device("cpu"), lambda tensor: tensor)
    restored.load_state_dict(scaler.state_dict())
    assert torch.equal(restored.scales, scaler.scales) and torch.equal(restored.growth, scaler.growth)


def test_a_loss_scale_resumes_into_the_other_kind_of_scaler():
    """A checkpoint saved with one ``GradScaler`` (an earlier version's fp16 grid) resumes into a
    per-head scaler, every head at its scale; a per-head state resumes into one ``GradScaler`` at
    the smallest head scale."""
    one = torch.amp.GradScaler("cpu", init_scale=512.0)
    one.load_state_dict(one.state_dict() | {"_growth_tracker": 7})
    grid = Precision("float16", torch.device("cpu"))
    grid.scaler = HeadScaler(3, torch.device("cpu"), lambda tensor: tensor)
    grid.load_state_dict(one.state_dict())
    assert grid.scaler.scales.tolist() == [512.0] * 3 and grid.scaler.growth.tolist() == [7] * 3
    grid.scaler.scales[1] = 128.0
    single = Precision("float16", torch.device("cpu"))
    single.load_state_dict(grid.state_dict())
    assert single.scaler.get_scale() == 128.0 and single.scaler.state_dict()["_growth_tracker"] == 0
