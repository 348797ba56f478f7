"""The full fine-tune path (``meta.finetune_encoder: true``) against the seed app's own
optimizer code on its own YAML files (yynil/vjepa2 ``app/video_classifier``).

The seed's ``init_opt`` cannot be imported here: ``tests/fixtures/seed_finetune/seed_finetune.json``
holds what it built (its AdamW groups by parameter name, and every group's learning rate and
weight decay at every iteration, read after its two schedulers stepped); ``README.md`` there says
how it was made. V-JEPA 2's modules and schedulers, which the seed imports, are cc-vjepa2's.

What matches the seed, exactly:

* group membership: encoder tensors with ``enc_lr_scale``, classifier tensors with scale 1;
  biases and 1-D tensors (norms) never decayed, every other trained tensor decayed, except below;
* the warmup-stable-decay learning rate and cosine weight decay per group, value for value, one
  step apart (below); with ``optimization.protocol=vjepa2`` step for step, bit for bit;
* the loop of its ``train.py``: schedules set before the forward, the clips' logits averaged,
  cross-entropy, backward, AdamW step (same betas, eps), ``zero_grad``: three steps of a
  ``vit_tiny`` from the same weights on the same batches end at the same weights.

What differs, by design (the harness's conventions, ``optimization.protocol: harness``, which a
seed YAML gets):

* the pooler's ``query_tokens`` are not decayed (the seed decays them: they are 3-D); the
  encoder's fixed ``pos_embed`` is a buffer here, a frozen parameter in the seed's group (inert);
* optimizer step ``i`` uses schedule step ``i`` (the seed steps its schedulers first: ``i + 1``),
  so the harness starts at ``start_lr`` and ends one anneal step short of ``final_lr``;
* warmup and anneal epochs are rounded to steps (the seed truncates: ``int(1.5) == 1``);
* gradients are clipped to norm ``optimization.clip_grad`` (1.0; the seed never clips);
* ``meta.dtype: bfloat16`` runs without a GradScaler (the seed creates one for bfloat16 too:
  power-of-two scaling, numerically inert but for its skip of non-finite steps).

``optimization.protocol=vjepa2`` (V-JEPA 2's frozen-probe protocol) removes the schedule
differences but decays every tensor, biases and norms included, so it is not the seed's
fine-tune either.
"""

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from vjepa2.models.attentive_pooler import AttentiveClassifier as TheirClassifier
from vjepa2.models.vision_transformer import vit_tiny as their_vit_tiny
from vjepa2.utils.schedulers import WSDSchedule

from harness.config import load_config
from harness.parallel.precision import Precision
from harness.training import Trainer, assemble
from harness.training.optim import Schedule, build_optimizer, build_schedules

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEED = json.loads((FIXTURES / "seed_finetune" / "seed_finetune.json").read_text())
SCENARIOS = SEED["scenarios"]
TINY = SEED["tiny"]
QUERY_TOKENS = "classifier.pooler.query_tokens"


def overrides(name: str, *extra: str) -> list[str]:
    """The seed file of scenario ``name`` at the fixture's sizes, fine-tuning, with its overrides."""
    scenario = SCENARIOS[name]
    frames = TINY["frames"]
    return [
        f"model.model_name={TINY['model_name']}",
        f"model.depth={TINY['depth']}",
        f"data.crop_size={TINY['crop_size']}",
        f"data.dataset_fpcs=[{frames}]",
        f"data.val_dataset_fpcs=[{frames}]",
        f"meta.num_classes={TINY['num_classes']}",
        "meta.finetune_encoder=true",
        "meta.pretrain_checkpoint=null",
        f"optimization.ipe={scenario['ipe']}",
        *(f"optimization.{key}={value}" for key, value in scenario["overrides"].items()),
        *extra,
    ]


def seed_config(name: str, *extra: str):
    return load_config(FIXTURES / "vjepa2" / SCENARIOS[name]["yaml"], overrides(name, *extra))


def harness_optimizer(config):
    """The model and AdamW that ``harness.train`` builds for ``config`` (one process)."""
    model = assemble.build_model(config, TINY["num_classes"])
    return model, build_optimizer(config.optimization, model, torch.device("cpu"))


def seed_group_of(scenario: dict) -> dict[str, int]:
    return {name: index for index, group in enumerate(scenario["groups"]) for name in group["names"]}


def harness_rates(optimizer) -> dict[str, tuple[float, float]]:
    return {name: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for name in group["names"]}


@pytest.mark.parametrize("name", ["seed_app", "seed_vitb16", "fractional"])
def test_groups_by_parameter_name_are_the_seeds_but_query_tokens(name):
    scenario = SCENARIOS[name]
    model, optimizer = harness_optimizer(seed_config(name))
    enc_lr_scale = scenario["overrides"].get("enc_lr_scale", 1.0)
    seed = {}
    for group in scenario["groups"]:
        for param_name in group["names"]:
            seed[param_name] = (group["lr_scale"] or 1.0, not group["WD_exclude"])
    ours = {n: (g["lr_scale"], g["wd_scale"] == 1) for g in optimizer.param_groups for n in g["names"]}
    # The seed's groups hold its frozen tensors too (no gradient: AdamW never touches them).
    assert set(seed) - set(ours) == set(scenario["frozen"]) <= {"encoder.pos_embed"}
    assert set(ours) <= set(seed) and set(ours) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(scale == enc_lr_scale for n, (scale, _) in seed.items() if n.startswith("encoder."))
    differ = {n for n in ours if ours[n] != seed[n]}
    assert differ == {QUERY_TOKENS}  # by design: the seed decays them (3-D), the harness does not
    assert seed[QUERY_TOKENS] == (1.0, True) and ours[QUERY_TOKENS] == (1.0, False)


@pytest.mark.parametrize("name", ["seed_app", "seed_vitb16", "fractional"])
def test_harness_schedule_is_the_seeds_one_step_earlier(name):
    """Per group, per step: the harness's step ``i + 1`` is the seed's iteration ``i`` when the
    warmup and anneal come out whole; with fractional ones it rounds where the seed truncates."""
    scenario = SCENARIOS[name]
    config = seed_config(name)
    assert config.optimization.protocol == "harness"
    _, optimizer = harness_optimizer(config)
    schedules = build_schedules(config.optimization, scenario["ipe"])
    main, total, seed_lr = schedules.main, scenario["total_steps"], scenario["lr_schedule"]
    assert main.total_steps == total == len(scenario["steps"]) and seed_lr["T_max"] == total - (
        seed_lr["warmup_steps"] + seed_lr["anneal_steps"]
    )
    ipe, opt = scenario["ipe"], config.optimization
    assert (main.warmup_steps, main.anneal_steps) == (round(opt.warmup * ipe), round(opt.anneal * ipe))
    assert (seed_lr["warmup_steps"], seed_lr["anneal_steps"]) == (int(opt.warmup * ipe), int(opt.anneal * ipe))
    # The seed's scheduler with the harness's step counts, stepped before each iteration.
    probe = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    same_counts = WSDSchedule(probe, main.warmup_steps, main.anneal_steps, total, opt.start_lr, opt.lr, opt.final_lr)
    groups = seed_group_of(scenario)
    schedules.apply(optimizer, 0)
    assert {lr for lr, _ in harness_rates(optimizer).values()} <= {opt.start_lr, opt.start_lr * opt.enc_lr_scale}
    mismatched = []
    for step, seed_step in enumerate(scenario["steps"][:-1]):
        schedules.apply(optimizer, step + 1)
        shape = same_counts.step()
        for group in optimizer.param_groups:
            assert math.isclose(group["lr"], shape * group["lr_scale"], rel_tol=1e-12, abs_tol=1e-18)
            for param_name in group["names"]:
                seed_rate, seed_wd = seed_step["groups"][groups[param_name]]
                if param_name != QUERY_TOKENS:
                    assert math.isclose(group["weight_decay"], seed_wd, rel_tol=1e-12), (step, param_name)
                if not math.isclose(group["lr"], seed_rate, rel_tol=1e-12, abs_tol=1e-18):
                    mismatched.append(step)
    whole = seed_lr["warmup_steps"] == main.warmup_steps and seed_lr["anneal_steps"] == main.anneal_steps
    assert whole == (name != "fractional") and (not mismatched) == whole
    # The harness's last step is one anneal step short of final_lr; the seed's reaches it.
    assert math.isclose(scenario["steps"][-1]["lr"], opt.final_lr, rel_tol=1e-12, abs_tol=1e-18)
    assert not math.isclose(main.lr_at(total - 1), opt.final_lr, rel_tol=1e-3)


@pytest.mark.parametrize("name", ["seed_app", "seed_vitb16", "fractional"])
def test_vjepa2_protocol_is_the_seeds_schedule_bit_for_bit_but_decays_everything(name):
    scenario = SCENARIOS[name]
    config = seed_config(name, "optimization.protocol=vjepa2")
    _, optimizer = harness_optimizer(config)
    schedules = build_schedules(config.optimization, scenario["ipe"])
    groups = seed_group_of(scenario)
    for step, seed_step in enumerate(scenario["steps"]):
        assert schedules.apply(optimizer, step) == (seed_step["lr"], seed_step["wd"])
        for param_name, (lr, wd) in harness_rates(optimizer).items():
            seed_lr, seed_wd = seed_step["groups"][groups[param_name]]
            assert lr == seed_lr, (step, param_name)
            # the probe protocol decays biases and norms too; the seed's fine-tune does not
            assert wd == seed_step["wd"] and (wd == seed_wd or scenario["groups"][groups[param_name]]["WD_exclude"])


def test_vjepa2_wsd_is_vjepa2s_wsdschedule_bit_for_bit():
    rng = random.Random(0)
    for _ in range(200):
        total = rng.randint(2, 40)
        warmup, anneal = rng.randint(0, total // 2), rng.randint(0, total // 2)
        start_lr, lr, final_lr = rng.uniform(0, 1e-3), rng.uniform(1e-5, 1e-2), rng.uniform(0, 1e-4)
        ours = Schedule(total, lr, start_lr, final_lr, warmup, anneal, protocol="vjepa2")
        theirs = WSDSchedule(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), warmup, anneal, total,
                             start_lr, lr, final_lr)  # fmt: skip
        assert [ours.lr_at(step + 1) for step in range(total)] == [theirs.step() for _ in range(total)]


def test_seed_files_keep_the_harness_conventions():
    """The by-design differences above, pinned: a change to any of them must update this file."""
    config = seed_config("seed_app")
    assert config.optimization.protocol == "harness" and config.optimization.clip_grad == 1.0
    assert config.meta.dtype == SCENARIOS["seed_app"]["dtype"] == "bfloat16"
    assert SCENARIOS["seed_app"]["scaler"] == "GradScaler"  # the seed's init_opt, for bfloat16
    assert Precision("bfloat16", torch.device("cpu")).scaler is None


def three_step_overrides(demo_root: Path, folder: Path) -> list[str]:
    return [
        f"folder={folder}",
        f"data.datasets=[{demo_root / 'train.csv'}]",
        "data.val_datasets=[]",  # no evaluation (as in the seed's file with val_datasets: null)
        f"data.class_names={demo_root / 'classes.txt'}",
        "data.fps=null",
        "data.val_fps=null",
        "data.frame_step=2",
        "data.num_workers=0",
        "data.val_num_workers=0",
        "data_aug.horizontal_flip=false",
        "data_aug.auto_augment=false",
        "meta.dtype=float32",
        "optimization.clip_grad=null",  # the seed never clips (the harness's default is 1.0)
        "logging.progress_bar=false",
        "logging.log_every=100",
    ]


def seed_replay(encoder, classifier, batches, scenario, no_decay=()):
    """The seed's ``train.py`` loop over ``batches`` with its AdamW groups (from the fixture) and
    its learning rates and weight decays per iteration (its schedulers stepped first);
    ``no_decay``: names moved to a group without weight decay."""
    params = {f"encoder.{n}": p for n, p in encoder.named_parameters()}
    params |= {f"classifier.{n}": p for n, p in classifier.named_parameters()}
    groups = []
    for group in scenario["groups"]:
        names = [n for n in group["names"] if n not in no_decay]
        groups.append({"params": [params[n] for n in names], "weight_decay": group["weight_decay"]})
    groups.append({"params": [params[n] for n in no_decay], "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, betas=tuple(scenario["betas"]), eps=scenario["eps"])
    encoder.train(), classifier.train()
    for (videos, labels), step in zip(batches, scenario["steps"], strict=True):
        for group, (lr, wd) in zip(optimizer.param_groups, step["groups"]):
            group["lr"], group["weight_decay"] = lr, wd
        optimizer.param_groups[-1]["lr"] = step["lr"]  # the moved tensors: classifier, scale 1
        bsz, clips = videos.shape[:2]
        logits = classifier(encoder(videos.view(-1, *videos.shape[2:]))).view(bsz, clips, -1).mean(dim=1)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    return params


def test_three_fine_tune_steps_end_at_the_seed_loops_weights(demo_root, tmp_path):
    """``harness.train`` on the seed app's file (fine-tune, 3 iterations, a constant learning rate
    and weight decay, no clipping) against the seed's loop with its groups on cc-vjepa2's
    modules, from the same initial weights on the same batches: the same weights after three
    steps (bit-identical on CPU; 1e-6 allowed) once ``query_tokens`` are left undecayed as the
    harness does, and visibly not without that."""
    scenario = SCENARIOS["three_steps"]
    config = load_config(FIXTURES / "vjepa2" / scenario["yaml"],
                         overrides("three_steps", *three_step_overrides(demo_root, tmp_path / "run")))  # fmt: skip
    trainer = Trainer(config)
    model = trainer.model
    model_cfg = config.model
    encoder = their_vit_tiny(img_size=TINY["crop_size"], num_frames=TINY["frames"], patch_size=16, tubelet_size=2,
                             uniform_power=model_cfg.uniform_power, use_rope=model_cfg.use_rope, use_sdpa=True,
                             use_silu=model_cfg.use_silu, wide_silu=model_cfg.wide_silu)  # fmt: skip
    encoder.blocks = encoder.blocks[: TINY["depth"]]
    classifier = TheirClassifier(embed_dim=192, num_heads=model_cfg.attn_pooler_heads,
                                 depth=model_cfg.attn_pooler_depth, num_classes=TINY["num_classes"])  # fmt: skip
    missing, unexpected = encoder.load_state_dict(model.encoder.state_dict(), strict=False)
    assert not missing and set(unexpected) <= {"pos_embed"}
    classifier.load_state_dict(model.classifier.state_dict(), strict=True)
    initial = {f"{prefix}.{k}": v.clone() for prefix, module in (("encoder", encoder), ("classifier", classifier))
               for k, v in module.state_dict().items()}  # fmt: skip

    videos, labels, rates = [], [], []
    model.register_forward_pre_hook(lambda m, args: videos.append(args[0].detach().clone()) if m.training else None)
    train_step = trainer.train_step
    trainer.train_step = lambda micro: labels.append(micro[0].labels.clone()) or train_step(micro)
    trainer.optimizer.register_step_pre_hook(lambda optimizer, *_: rates.append(harness_rates(optimizer)))
    trainer.fit()
    batches = list(zip(videos, labels, strict=True))
    assert len(batches) == len(rates) == len(scenario["steps"]) == 3
    groups = seed_group_of(scenario)
    for step, seed_step in zip(rates, scenario["steps"]):  # constant: no step offset to see
        assert all(lr == seed_step["groups"][groups[n]][0] for n, (lr, _) in step.items())
        assert all(wd == seed_step["groups"][groups[n]][1] for n, (_, wd) in step.items() if n != QUERY_TOKENS)

    ours = {f"encoder.{n}": p for n, p in model.encoder.named_parameters()}
    ours |= {f"classifier.{n}": p for n, p in model.classifier.named_parameters()}
    theirs = seed_replay(encoder, classifier, batches, scenario, no_decay=(QUERY_TOKENS,))
    for name, value in theirs.items():
        assert not torch.equal(value, initial[name]), name
        torch.testing.assert_close(ours[name].detach(), value.detach(), rtol=0, atol=1e-6, msg=name)

    # The seed's own groups: query_tokens decayed (lr 0.01 x wd 0.5 a step) -- the one difference.
    for prefix, module in (("encoder", encoder), ("classifier", classifier)):
        module.load_state_dict({k.split(".", 1)[1]: v for k, v in initial.items() if k.startswith(f"{prefix}.")})
    exact = seed_replay(encoder, classifier, batches, scenario)
    gap = (exact[QUERY_TOKENS] - ours[QUERY_TOKENS]).abs().max().item()
    assert gap > 1e-4, gap
