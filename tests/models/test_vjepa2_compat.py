"""Against V-JEPA 2's own code (the ``cc-vjepa2`` package: V-JEPA 2's ``src`` as ``vjepa2``) and
``transformers``' V-JEPA 2: files in their exact layouts load strictly and give their outputs."""

from pathlib import Path

import pytest
import torch
import transformers  # test extra: V-JEPA 2 as Hugging Face ships it
import vjepa2.models.attentive_pooler as vjepa2_pooler  # test extra cc-vjepa2: V-JEPA 2's own modules
import vjepa2.models.vision_transformer as vjepa2_vit

from harness.models import (
    AttentiveClassifier,
    VideoClassifier,
    create_encoder,
    hf_vjepa2,
    load_classifier,
    load_encoder,
)

# V-JEPA 2's eval, run by its own code (``evals/video_classification_frozen/eval.py``): see
# tests/fixtures/vjepa2_eval/README.md. Per scenario, ``latest.pt`` is what its save_checkpoint
# wrote; ``multiclip.pt`` holds validation clips and the probabilities its run_one_epoch computed.
EVAL_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vjepa2_eval"
SCENARIOS = ("two_heads", "one_head", "multilevel")


def eval_fixture(scenario):
    """``(latest.pt path, multiclip record)`` of one scenario."""
    return EVAL_FIXTURES / scenario / "latest.pt", torch.load(EVAL_FIXTURES / scenario / "multiclip.pt")


def their_head(config):
    """V-JEPA 2's own probe head of the fixture's shape (``config``: the scenario's record)."""
    return vjepa2_pooler.AttentiveClassifier(
        embed_dim=24, num_heads=config["probe_heads"], depth=config["probe_blocks"], num_classes=config["num_classes"]
    )


def our_head(config):
    """Ours of the same shape."""
    return AttentiveClassifier(24, config["num_classes"], num_heads=config["probe_heads"], depth=config["probe_blocks"])


def fixture_encoder(out_layers=None):
    """The harness encoder of the fixture's size, loaded strictly from the file V-JEPA 2's eval read."""
    encoder = create_encoder("vit_tiny_rope", img_size=16, num_frames=4, patch_size=8, embed_dim=24, depth=2,
                             num_heads=2, out_layers=out_layers)  # fmt: skip
    report = load_encoder(encoder, EVAL_FIXTURES / "encoder.pt")
    assert not report.missing and not report.unexpected
    return encoder.eval()


def vjepa2_eval_checkpoint(classifiers, epoch=3):
    """A V-JEPA 2 eval ``latest.pt`` for heads of any size (tests that need vit_tiny-wide heads,
    too large to store): DDP-wrapped heads (``module.`` keys), one AdamW per head with its
    ``mc_*`` schedule keys after one step, scalers, epoch. Its layout is checked against the file
    V-JEPA 2's own ``save_checkpoint`` wrote (test_hand_built_eval_checkpoint_has_vjepa2s_layout)."""
    optimizers = []
    for head in classifiers:
        group = {"params": list(head.parameters()), "mc_warmup_steps": 0, "mc_start_lr": 1e-3, "mc_ref_lr": 1e-3,
                 "mc_final_lr": 0.0, "mc_ref_wd": 0.01, "mc_final_wd": 0.01}  # fmt: skip
        optimizer = torch.optim.AdamW([group])
        head(torch.randn(2, 8, head.linear.in_features)).sum().backward()
        optimizer.step()
        optimizers.append(optimizer)
    return {
        "classifiers": [{f"module.{k}": v for k, v in head.state_dict().items()} for head in classifiers],
        "opt": [o.state_dict() for o in optimizers],
        "scaler": [{} for _ in classifiers],  # GradScaler state; {} when it was disabled (no GPU)
        "epoch": epoch,
        "batch_size": 4,
        "world_size": 8,
    }


def layout(value):
    """A checkpoint's structure: keys, nesting, types, tensor dtypes and ranks (not values)."""
    if isinstance(value, dict):
        return {key: layout(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [layout(item) for item in value]
    if torch.is_tensor(value):
        return ("tensor", value.dtype, value.dim())
    return type(value).__name__


def test_hand_built_eval_checkpoint_has_vjepa2s_layout():
    """The helper above against V-JEPA 2's own file: the same keys at every level, types, tensor
    dtypes and ranks; AdamW's own group options aside (those follow the installed torch)."""
    path, record = eval_fixture("two_heads")
    theirs = torch.load(path)
    config = record["config"]
    heads = [their_head(config) for _ in theirs["classifiers"]]
    ours = vjepa2_eval_checkpoint(heads, epoch=1)
    adamw_options = set(torch.optim.AdamW([torch.zeros(1)]).defaults)
    for saved in (theirs, ours):
        for opt in saved["opt"]:
            for group in opt["param_groups"]:
                assert adamw_options <= set(group)
                for key in adamw_options:
                    del group[key]
    assert layout(ours) == layout(theirs)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_vjepa2_eval_checkpoint_heads_load_strictly_and_give_its_logits(scenario):
    path, record = eval_fixture(scenario)
    config = record["config"]
    tokens = torch.randn(2, 40, 24)
    for index, state in enumerate(torch.load(path)["classifiers"]):
        ours = our_head(config)
        report = load_classifier(ours, path, index=index)  # strict: any extra/missing key raises
        assert not report.missing and not report.unexpected
        theirs = their_head(config)
        theirs.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        torch.testing.assert_close(ours.eval()(tokens), theirs.eval()(tokens), rtol=0, atol=1e-5)


def test_output_projection_is_explicit_and_breaks_a_strict_vjepa2_load():
    path, _ = eval_fixture("one_head")  # heads of width 24, 4 attention heads, 5 classes
    with_proj = AttentiveClassifier(24, 5, num_heads=4, output_projection=True)
    assert "pooler.cross_attention_block.xattn.proj.weight" in with_proj.state_dict()
    assert "pooler.cross_attention_block.xattn.proj.weight" not in AttentiveClassifier(24, 5, 4).state_dict()
    with pytest.raises(Exception, match="missing"):
        load_classifier(with_proj, path)


@pytest.mark.parametrize("name,rope", [("vit_tiny", False), ("vit_tiny_rope", True)])
def test_vjepa2_encoder_checkpoint_and_multilevel_features(tmp_path, name, rope):
    torch.manual_seed(0)
    theirs = vjepa2_vit.vit_tiny(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=rope,
                                 uniform_power=True, out_layers=[1, 5, 11]).eval()  # fmt: skip
    torch.save({"target_encoder": {f"module.backbone.{k}": v for k, v in theirs.state_dict().items()}, "epoch": 1},
               tmp_path / "vitt.pt")  # fmt: skip
    ours = create_encoder(name, img_size=32, num_frames=4, uniform_power=True, out_layers=[1, 5, 11])
    load_encoder(ours, tmp_path / "vitt.pt")
    x = torch.randn(2, 3, 4, 32, 32)
    expected = torch.cat(theirs(x), dim=1)  # V-JEPA 2's multilevel wrapper concatenates along tokens
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)


def small_hf_config(**overrides):
    options = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, num_pooler_layers=2,
                   crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2, pred_hidden_size=48,
                   pred_num_hidden_layers=1, pred_num_attention_heads=4, num_labels=5,
                   id2label={i: f"class_{i}" for i in range(5)})  # fmt: skip
    return transformers.VJEPA2Config(**{**options, **overrides})


def test_hugging_face_classifier_directory_gives_transformers_logits(tmp_path):
    torch.manual_seed(0)
    theirs = transformers.VJEPA2ForVideoClassification(small_hf_config()).eval()
    theirs.save_pretrained(tmp_path / "hf")
    config = hf_vjepa2.read_hf_config(tmp_path / "hf")
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, **hf_vjepa2.encoder_options(config))
    options = hf_vjepa2.classifier_options(config)
    classifier = AttentiveClassifier(96, options["num_classes"], options["num_heads"], options["depth"],
                                     norm_eps=options["norm_eps"])  # fmt: skip
    load_encoder(encoder, tmp_path / "hf")
    load_classifier(classifier, tmp_path / "hf")  # strict
    model = VideoClassifier(encoder, classifier).eval()
    video = torch.randn(2, 4, 3, 32, 32)  # transformers' layout [B, T, C, H, W]
    with torch.no_grad():
        expected = theirs(pixel_values_videos=video).logits
        features = theirs.vjepa2(pixel_values_videos=video, skip_predictor=True).last_hidden_state
        ours_features = encoder(video.transpose(1, 2))
        ours_logits = model(video.transpose(1, 2))
    torch.testing.assert_close(ours_features, features, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours_logits, expected, rtol=0, atol=1e-4)
    assert hf_vjepa2.class_names(config) == [f"class_{i}" for i in range(5)]


def test_hugging_face_encoder_only_directory(tmp_path):
    torch.manual_seed(1)
    theirs = transformers.VJEPA2Model(small_hf_config()).eval()
    theirs.save_pretrained(tmp_path / "hf_encoder")
    config = hf_vjepa2.read_hf_config(tmp_path / "hf_encoder")
    encoder = create_encoder("vit_tiny", img_size=32, num_frames=4, **hf_vjepa2.encoder_options(config))
    report = load_encoder(encoder, tmp_path / "hf_encoder")
    assert not report.missing and not report.unexpected
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        expected = theirs.get_vision_features(video)
    torch.testing.assert_close(encoder(video.transpose(1, 2)), expected, rtol=0, atol=1e-4)
    with pytest.raises(Exception, match="encoder .*only"):
        load_classifier(AttentiveClassifier(96, 5, 4, 3), tmp_path / "hf_encoder")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_concat_tokens_is_vjepa2s_multiclip_evaluation(scenario):
    """V-JEPA 2's eval on its validation batches (segments x views per video, its ClipAggregation
    and heads, softmax averaged over views by its run_one_epoch) against ours on the same clips,
    encoder and heads: ``two_heads`` joins 2 segments with the temporal table and averages 2
    views, ``one_head`` averages 3 views of one segment, ``multilevel`` is ``two_heads``' case with
    its multilevel wrapper (blocks 0 and 1 concatenated along tokens). The clips go in clip-major,
    as our loaders lay them out: ``[B, segment x views, C, T, H, W]``."""
    path, record = eval_fixture(scenario)
    config = record["config"]
    encoder = fixture_encoder(config["out_layers"])
    for clips, indices, expected in zip(record["clips"], record["clip_indices"], record["probabilities"]):
        views = len(clips[0])
        ours_input = torch.stack([view for segment in clips for view in segment], dim=1)
        ours_indices = torch.stack([index for index in indices for _ in range(views)], dim=1)
        for head, their_probabilities in enumerate(expected):
            classifier = our_head(config)
            load_classifier(classifier, path, index=head)
            model = VideoClassifier(encoder, classifier, freeze_encoder=True, clip_aggregation="concat_tokens",
                                    temporal_pos_embed=config["temporal_pos_embed"],
                                    max_frames=config["max_frames"]).eval()  # fmt: skip
            with torch.no_grad():
                ours = model(ours_input, ours_indices, num_views=views)
            torch.testing.assert_close(ours.exp(), their_probabilities, rtol=0, atol=1e-5)


def test_hugging_face_state_conversion_is_exactly_invertible():
    torch.manual_seed(0)
    theirs = transformers.VJEPA2ForVideoClassification(small_hf_config()).state_dict()
    encoder, classifier = hf_vjepa2.encoder_state_from_hf(theirs), hf_vjepa2.classifier_state_from_hf(theirs)
    back = {**hf_vjepa2.encoder_state_to_hf(encoder), **hf_vjepa2.classifier_state_to_hf(classifier)}
    wanted = {k: v for k, v in theirs.items() if not k.startswith("vjepa2.predictor.")}
    assert sorted(back) == sorted(wanted)
    assert all(torch.equal(back[k], wanted[k]) for k in wanted)
