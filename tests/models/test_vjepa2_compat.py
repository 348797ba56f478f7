"""Against V-JEPA 2's own code (the ``cc-vjepa2`` package: V-JEPA 2's ``src`` as ``vjepa2``) and
``transformers``' V-JEPA 2: files in their exact layouts load strictly and give their outputs."""

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


def vjepa2_eval_checkpoint(classifiers, epoch=3):
    """What V-JEPA 2's ``evals/video_classification_frozen/eval.py`` saves: DDP-wrapped heads
    (``module.`` keys), one AdamW per head with its ``mc_*`` schedule keys, scalers, epoch."""
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
        "scaler": None,
        "epoch": epoch,
        "batch_size": 4,
        "world_size": 8,
    }


@pytest.mark.parametrize("depth,heads", [(1, 4), (2, 3), (4, 6)])
def test_vjepa2_probe_weights_load_strictly_and_give_its_logits(tmp_path, depth, heads):
    torch.manual_seed(depth)
    theirs = [
        vjepa2_pooler.AttentiveClassifier(embed_dim=96, num_heads=heads, depth=depth, num_classes=7) for _ in range(3)
    ]
    path = tmp_path / "latest.pt"
    torch.save(vjepa2_eval_checkpoint(theirs), path)
    tokens = torch.randn(2, 40, 96)
    for index, head in enumerate(theirs):
        ours = AttentiveClassifier(96, 7, num_heads=heads, depth=depth)
        report = load_classifier(ours, path, index=index)  # strict: any extra/missing key raises
        assert not report.missing and not report.unexpected
        torch.testing.assert_close(ours(tokens), head.eval()(tokens), rtol=0, atol=1e-5)


def test_output_projection_is_explicit_and_breaks_a_strict_vjepa2_load(tmp_path):
    theirs = vjepa2_pooler.AttentiveClassifier(embed_dim=96, num_heads=4, depth=1, num_classes=5)
    torch.save(vjepa2_eval_checkpoint([theirs]), tmp_path / "probe.pt")
    with_proj = AttentiveClassifier(96, 5, num_heads=4, output_projection=True)
    assert "pooler.cross_attention_block.xattn.proj.weight" in with_proj.state_dict()
    assert "pooler.cross_attention_block.xattn.proj.weight" not in AttentiveClassifier(96, 5, 4).state_dict()
    with pytest.raises(Exception, match="missing"):
        load_classifier(with_proj, tmp_path / "probe.pt")


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


def vjepa2_multiclip_reference(encoder, probe, clips, clip_indices, tubelet, pos_embed=None):
    """V-JEPA 2's ``evals/video_classification_frozen`` protocol, step by step as its
    ``ClipAggregation`` wrapper and ``run_one_epoch`` do it: ``clips[i][j]`` is clip ``i``, view
    ``j`` (``[B, C, T, H, W]``); all go through the encoder as one batch (clip-major, then view);
    each view's clips are joined along time (tokens viewed as ``[B, T, S, D]``), plus the 1D table
    gathered at ``indices[:, ::tubelet]``; the probe runs per view; softmax averaged over views."""
    from vjepa2.masks.utils import apply_masks

    num_clips, num_views = len(clips), len(clips[0])
    batch, _, frames = clips[0][0].shape[:3]
    outputs = encoder(torch.cat([torch.cat(views, dim=0) for views in clips], dim=0))
    if isinstance(outputs, list):
        outputs = torch.cat(outputs, dim=1)
    _, count, dim = outputs.shape
    steps = frames // tubelet
    per_view = [[] for _ in range(num_views)]
    for i in range(num_clips):
        block = outputs[i * batch * num_views : (i + 1) * batch * num_views]
        for j in range(num_views):
            per_view[j].append(block[j * batch : (j + 1) * batch])
    probabilities = []
    for view_outputs in per_view:
        merged = torch.cat([o.reshape(batch, steps, count // steps, dim) for o in view_outputs], dim=1).flatten(1, 2)
        if pos_embed is not None:
            table = apply_masks(pos_embed.repeat(batch, 1, 1), [c[:, ::tubelet] for c in clip_indices], concat=False)
            merged = merged + torch.cat(table, dim=1).unsqueeze(2).repeat(1, 1, count // steps, 1).flatten(1, 2)
        probabilities.append(probe(merged).softmax(dim=1))
    return sum(probabilities) / len(probabilities)


@pytest.mark.parametrize("use_pos_embed,out_layers", [(False, None), (True, None), (False, [3, 11])])
def test_concat_tokens_is_vjepa2s_multiclip_evaluation(tmp_path, use_pos_embed, out_layers):
    from vjepa2.models.utils.pos_embs import get_1d_sincos_pos_embed

    torch.manual_seed(0)
    their_encoder = vjepa2_vit.vit_tiny(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=True,
                                        out_layers=out_layers).eval()  # fmt: skip
    probe = vjepa2_pooler.AttentiveClassifier(embed_dim=192, num_heads=3, depth=2, num_classes=6).eval()
    torch.save({"target_encoder": their_encoder.state_dict()}, tmp_path / "enc.pt")
    torch.save(vjepa2_eval_checkpoint([probe]), tmp_path / "probe.pt")
    encoder = create_encoder("vit_tiny_rope", img_size=32, num_frames=4, out_layers=out_layers)
    load_encoder(encoder, tmp_path / "enc.pt")
    classifier = AttentiveClassifier(192, 6, num_heads=3, depth=2)
    load_classifier(classifier, tmp_path / "probe.pt")
    model = VideoClassifier(encoder, classifier, freeze_encoder=True, clip_aggregation="concat_tokens",
                            temporal_pos_embed=use_pos_embed, max_frames=64).eval()  # fmt: skip
    batch, num_clips, num_views = 2, 3, 2
    clips = [[torch.randn(batch, 3, 4, 32, 32) for _ in range(num_views)] for _ in range(num_clips)]
    indices = [torch.stack([torch.arange(4) * 2 + 10 * i + b for b in range(batch)]) for i in range(num_clips)]
    pos_embed = None
    if use_pos_embed:
        pos_embed = torch.from_numpy(get_1d_sincos_pos_embed(192, 32)).float().unsqueeze(0)
    with torch.no_grad():
        expected = vjepa2_multiclip_reference(their_encoder, probe, clips, indices, 2, pos_embed)
        ours_input = torch.stack([view for views in clips for view in views], dim=1)  # [B, clips x views, ...]
        ours_indices = torch.stack([idx for idx in indices for _ in range(num_views)], dim=1)
        ours = model(ours_input, ours_indices, num_views=num_views)
    torch.testing.assert_close(ours.exp(), expected, rtol=0, atol=1e-5)
    assert torch.equal(ours.argmax(1), expected.argmax(1))


def test_hugging_face_state_conversion_is_exactly_invertible():
    torch.manual_seed(0)
    theirs = transformers.VJEPA2ForVideoClassification(small_hf_config()).state_dict()
    encoder, classifier = hf_vjepa2.encoder_state_from_hf(theirs), hf_vjepa2.classifier_state_from_hf(theirs)
    back = {**hf_vjepa2.encoder_state_to_hf(encoder), **hf_vjepa2.classifier_state_to_hf(classifier)}
    wanted = {k: v for k, v in theirs.items() if not k.startswith("vjepa2.predictor.")}
    assert sorted(back) == sorted(wanted)
    assert all(torch.equal(back[k], wanted[k]) for k in wanted)
