"""``configs/recipes/``: each recipe loads with the harness's config loader and holds V-JEPA 2's
published attentive-probe numbers for its dataset (:data:`VJEPA2`, each entry citing the V-JEPA 2
file it came from), so a changed number fails here. The k400 and ssv2 recipes also equal, key for
key but paths, what the harness makes of V-JEPA 2's own eval file (copies in tests/fixtures/vjepa2).
The ek100 recipe trains three label sets on segment listings (what ``harness.datasets ek100``
writes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.config import load_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "configs" / "recipes"
FIXTURES = REPO / "tests" / "fixtures" / "vjepa2"
LRS = [0.005, 0.003, 0.001, 0.0003, 0.0001]


def grid(weight_decays: list[float], lrs: list[float]) -> list[dict]:
    """``multihead_kwargs`` as V-JEPA 2's files list them: weight decay outer, lr inner, no warmup,
    lr constant from ``start_lr`` then cosine to 0, weight decay constant."""
    return [dict(lr=lr, start_lr=lr, final_lr=0.0, warmup=0.0, weight_decay=wd, final_weight_decay=wd)
            for wd in weight_decays for lr in lrs]  # fmt: skip


#: V-JEPA 2's numbers, under its own key names (experiment.data / .optimization / .classifier).
VJEPA2 = {
    # configs/eval/vitl/ssv2.yaml (tag ssv2-vitl16-16x2x3-16f). facebookresearch/vjepa2: data and
    # classifier from configs/inference/vitl/ssv2.yaml @ d8e8d235; the grid from
    # configs/eval/vitl/ssv2-area-attn.yaml @ 073e524a ("based on ssv2.yaml"); the same in the copy of
    # ssv2.yaml in relliant/vjepa2 @ 0a404303.
    "ssv2": dict(frames_per_clip=16, frame_step=4, frames_per_second=None, num_segments=2, num_views_per_segment=3,
                 resolution=256, batch_size=4, num_epochs=20, num_classes=174, num_probe_blocks=4, num_heads=16,
                 out_layers=None, horizontal_flip=False, heads=grid([0.01, 0.1, 0.4, 0.8], LRS)),
    # configs/eval/vitl/k400.yaml (tag k400-vitl16-16x8x3-16f): tests/fixtures/vjepa2/eval_vitl_k400.yaml;
    # facebookresearch/vjepa2 configs/eval/vitl/k400-area-attn.yaml @ 57bfd737 has the same numbers.
    "k400": dict(frames_per_clip=16, frame_step=4, frames_per_second=None, num_segments=8, num_views_per_segment=3,
                 resolution=256, batch_size=4, num_epochs=20, num_classes=400, num_probe_blocks=4, num_heads=16,
                 out_layers=None, horizontal_flip=False, heads=grid([0.01, 0.1, 0.4, 0.8], LRS)),
    # configs/eval/vitl/diving48.yaml (tag diving48-vitl16-32x4x3). facebookresearch/vjepa2
    # configs/inference/vitl/diving48.yaml @ d8e8d235 (all but the grid, which inference files zero);
    # the grid from the copy of configs/eval/vitl/diving48.yaml in Cam-00/vjepa2-deepspeed @ 70f21917.
    "diving48": dict(frames_per_clip=32, frame_step=2, frames_per_second=None, num_segments=4, num_views_per_segment=3,
                     resolution=256, batch_size=2, num_epochs=100, num_classes=48, num_probe_blocks=4, num_heads=16,
                     out_layers=[17, 19, 21, 23], horizontal_flip=False, heads=grid([0.8], [0.001, 0.0003, 0.0001])),
    # configs/eval/vitl/ek100.yaml (tag ek100-vitl16, action anticipation). facebookresearch/vjepa2
    # configs/inference/vitl/ek100.yaml @ d8e8d235 (all but the grid); the grid from the copy of
    # configs/eval/vitl/ek100.yaml in Cam-00/vjepa2-deepspeed @ 70f21917; the flip from its
    # evals/action_anticipation_frozen/dataloader.py (random_horizontal_flip=True); one clip, one view.
    "ek100": dict(frames_per_clip=32, frame_step=None, frames_per_second=8, num_segments=1, num_views_per_segment=1,
                  resolution=256, batch_size=2, num_epochs=20, num_classes=0, num_probe_blocks=4, num_heads=16,
                  out_layers=None, horizontal_flip=True, heads=grid([0.0001, 0.001, 0.01, 0.1], LRS)),
}  # fmt: skip

#: What every V-JEPA 2 probe evaluation fixes (what the harness sets for a translated eval file).
FIXED = dict(sampling_rule="vjepa2", allow_clip_overlap=True, protocol="vjepa2", lr_schedule="cosine", clip_grad=None,
             finetune_encoder=False, load_encoder=True, dtype="float16", model_name="vit_large", use_rope=True,
             uniform_power=True, clip_aggregation="concat_tokens", temporal_pos_embed=False, max_frames=128,
             checkpoint_key="target_encoder", patch_size=16, tubelet_size=2, auto_augment=True, motion_shift=False,
             reprob=0.25, random_resize_scale=[0.08, 1.0], random_resize_aspect_ratio=[0.75, 4 / 3])  # fmt: skip


def numbers(sections: dict) -> dict:
    """A recipe's values under V-JEPA 2's names (and the fixed ones), from its sections as plain
    dicts (a loaded config's, or the YAML text's)."""
    data, aug, meta, model, opt = (sections.get(name, {}) for name in ("data", "data_aug", "meta", "model",
                                                                       "optimization"))  # fmt: skip
    assert data["val_dataset_fpcs"] == data["dataset_fpcs"] and data["val_num_clips"] == data["num_clips"]
    assert data["val_batch_size"] == data["batch_size"]
    heads = [{key: head[key] for key in grid([0], [0])[0]} for head in opt["heads"]]
    assert {key: opt[key] for key in heads[0]} == heads[0], "the run's own schedule is head 0's"
    found = dict(frames_per_clip=data["dataset_fpcs"][0], frame_step=data.get("frame_step"),
                 frames_per_second=data.get("fps"), num_segments=data["num_clips"],
                 num_views_per_segment=data["num_views"], resolution=data["crop_size"], batch_size=data["batch_size"],
                 num_epochs=opt["epochs"], num_classes=meta.get("num_classes"),
                 num_probe_blocks=model["attn_pooler_depth"], num_heads=model["attn_pooler_heads"],
                 out_layers=model.get("out_layers"), horizontal_flip=aug["horizontal_flip"], heads=heads)  # fmt: skip
    merged = {**data, **aug, **meta, **model, **opt}
    return found | {key: merged.get(key) for key in FIXED}


def sections_of(config) -> dict:
    return {name: dataclasses.asdict(getattr(config, name)) for name in ("data", "data_aug", "meta", "model",
                                                                           "optimization")}  # fmt: skip


@pytest.mark.parametrize("name", ["ssv2", "k400", "diving48"])
def test_recipe_loads_with_vjepa2_numbers(name):
    config = load_config(RECIPES / f"{name}_vitl16_probe.yaml")
    assert numbers(sections_of(config)) == VJEPA2[name] | FIXED
    assert not [note for note in config.notes if note.startswith("warning")], config.notes


def flat(config) -> dict:
    """Every key of the sections that make the run, as ``section.key`` -> value."""
    sections = sections_of(config).items()
    return {f"{section}.{key}": value for section, values in sections for key, value in values.items()}


#: keys that name files and machines, not the protocol
PATHS = {"data.datasets", "data.val_datasets", "data.class_names", "meta.pretrain_checkpoint", "data.num_workers"}


@pytest.mark.parametrize(
    ("name", "fixture", "area_keys"),
    [("k400", "eval_vitl_k400.yaml", set()),
     ("ssv2", "eval_vitl_ssv2-area-attn.yaml", {"model.use_area_attention", "model.area_attention_layers"})],
)  # fmt: skip
def test_recipe_equals_vjepa2_eval_file_translated(name, fixture, area_keys):
    """The recipe is what the harness runs for V-JEPA 2's own eval file, but for paths (and, for
    ssv2, whose plain eval file is not among the fixtures, the area attention of its area-attention
    variant, which is otherwise ssv2.yaml)."""
    recipe, translated = flat(load_config(RECIPES / f"{name}_vitl16_probe.yaml")), flat(load_config(FIXTURES / fixture))
    differ = {key for key in recipe if recipe[key] != translated[key]}
    assert differ == {key for key in PATHS | area_keys if recipe[key] != translated[key]}, {
        key: (recipe[key], translated[key]) for key in differ - PATHS - area_keys
    }
    assert translated["model.use_area_attention"] == bool(area_keys) and not recipe["model.use_area_attention"]


def test_ek100_recipe_loads_with_its_label_sets():
    # num_classes 0: each set's classes come from its class-name file (meta.label_sets)
    config = load_config(RECIPES / "ek100_vitl16_probe.yaml")
    assert numbers(sections_of(config)) == VJEPA2["ek100"] | FIXED
    assert config.meta.label_sets == ["verb", "noun", "action"] and config.meta.label_set_metric == "action"
    assert set(config.data.class_names) == {"verb", "noun", "action"}
