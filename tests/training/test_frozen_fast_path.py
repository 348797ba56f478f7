"""The frozen-encoder fast path: one encoder pass over several of the heads' micro-batches
(``data.encoder_batch_size``) and frozen matmul weights held in the autocast dtype."""

import copy
import csv

import pytest
import torch

from harness.config import ConfigError, load_config
from harness.models import create_encoder
from harness.parallel.precision import hold_frozen_weights
from harness.training import Trainer
from tests.conftest import tiny_overrides


@pytest.fixture()
def encoder_file(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "encoder.pt"
    torch.save({"encoder": create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2).state_dict()}, path)
    return path


def probe(demo_root, folder, encoder_file, *extra):
    settings = ("meta.finetune_encoder=false", f"meta.pretrain_checkpoint={encoder_file}", "optimization.epochs=1",
                "data.batch_size=2", "optimization.accumulation_steps=2")  # fmt: skip
    return load_config(None, tiny_overrides(demo_root, folder, *settings, *extra))


def losses(folder):
    with open(folder / "log_r0.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


def test_encoder_batch_size_encodes_a_step_at_once_and_trains_the_heads_alike(demo_root, tmp_path, encoder_file):
    """With 2 micro-batches of 2 per step, ``encoder_batch_size=4`` runs the encoder once per step
    instead of twice; the heads see the same tokens (mixup included), so they train the same."""
    runs = {}
    for size in (0, 4):
        trainer = Trainer(probe(demo_root, tmp_path / f"run{size}", encoder_file, f"data.encoder_batch_size={size}",
                                "optimization.mixup=0.8", "data.val_batch_size=8"))  # fmt: skip
        calls: list[int] = []
        trainer.model.encoder.register_forward_hook(lambda _module, args, _out, calls=calls: calls.append(len(args[0])))
        trainer.fit()
        runs[size] = trainer, calls
    (plain, plain_calls), (grouped, grouped_calls) = runs[0], runs[4]
    steps = plain.state.step
    assert steps == grouped.state.step > 0
    # Training passes, then one validation pass of the 8 videos.
    assert plain_calls == [2] * (2 * steps) + [8]
    assert grouped_calls == [4] * steps + [8]
    assert losses(tmp_path / "run4") == pytest.approx(losses(tmp_path / "run0"), rel=1e-5)
    for (name, ours), theirs in zip(grouped.model.classifier.state_dict().items(),
                                    plain.model.classifier.state_dict().values()):  # fmt: skip
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["meta.finetune_encoder=true"], "data.encoder_batch_size=4 needs meta.finetune_encoder=false"),
        (["data.encoder_batch_size=3"], r"data.encoder_batch_size=3 must be data.batch_size \(2\) times"),
        (["data.encoder_batch_size=6"], r"a divisor of optimization.accumulation_steps \(2\)"),
        (["data.encoder_batch_size=-2"], "data.encoder_batch_size"),
    ],
)
def test_a_bad_encoder_batch_size_is_a_config_error_naming_the_key(demo_root, tmp_path, encoder_file, extra, message):
    with pytest.raises(ConfigError, match=message):
        probe(demo_root, tmp_path, encoder_file, "data.encoder_batch_size=4", *extra)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_frozen_weights_held_in_the_autocast_dtype_give_the_same_outputs(dtype):
    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, depth=2).eval().requires_grad_(False)
    held = copy.deepcopy(encoder)
    held.blocks[1].mlp.fc2.requires_grad_(True)  # a module that trains keeps its dtype
    cast = hold_frozen_weights(held, dtype)
    frozen = [m for m in held.modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d)) and m is not held.blocks[1].mlp.fc2]  # fmt: skip
    assert cast == sum(p.numel() for m in frozen for p in m.parameters())
    assert held.blocks[0].attn.qkv.weight.dtype == dtype and held.patch_embed.proj.weight.dtype == dtype
    assert held.blocks[1].mlp.fc2.weight.dtype == torch.float32
    assert held.blocks[0].norm1.weight.dtype == torch.float32
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        expected, got = encoder(clips), held(clips)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert hold_frozen_weights(copy.deepcopy(encoder), torch.float32) == 0


def test_a_bf16_probe_run_holds_its_frozen_encoder_in_bf16(demo_root, tmp_path, encoder_file):
    """Only an encoder read from a file (never saved again) is cast: a frozen random encoder is
    saved with the run, so it stays as it is."""
    trainer = Trainer(probe(demo_root, tmp_path / "run", encoder_file, "meta.dtype=bfloat16"))
    encoder = trainer.model.encoder
    assert encoder.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16
    assert encoder.norm.weight.dtype == torch.float32
    assert trainer.model.classifier.linear.weight.dtype == torch.float32
    random = Trainer(probe(demo_root, tmp_path / "random", "null", "meta.dtype=bfloat16"))
    assert random.model.encoder.blocks[0].mlp.fc1.weight.dtype == torch.float32
