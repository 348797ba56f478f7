"""The videomae family against ``transformers``' VideoMAE (small random models built by
``transformers`` itself, ``save_pretrained``), VideoMAE's own ``.pth`` layouts, and the encoder
contract every family keeps (:mod:`harness.models.family`)."""

from __future__ import annotations

import pytest
import torch
import transformers  # the test extra installs it

from harness.config import load_config
from harness.models import create_encoder, family_of, family_of_module, load_classifier, load_encoder
from harness.models.family import EncoderSettings, materialize
from harness.models.heads import LinearClassifier
from harness.training.model_parts import build_encoder, build_model

FRAMES, SIDE, PATCH = 4, 32, 16


def hf_videomae(tmp_path, name: str, mean_pooling: bool = True, classes: int = 0):
    """A random ``transformers`` VideoMAE (classification when ``classes``), saved and returned."""
    config = transformers.VideoMAEConfig(
        image_size=SIDE, patch_size=PATCH, num_frames=FRAMES, tubelet_size=2, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=96, use_mean_pooling=mean_pooling, layer_norm_eps=1e-6,
        num_labels=max(classes, 2), id2label={i: f"kind {i}" for i in range(max(classes, 2))},
        label2id={f"kind {i}": i for i in range(max(classes, 2))},
    )  # fmt: skip
    torch.manual_seed(3)
    kind = transformers.VideoMAEForVideoClassification if classes else transformers.VideoMAEModel
    model = kind(config).eval()
    with torch.no_grad():  # no zero biases or unit norms: every tensor must map to be equal
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    path = tmp_path / name
    model.save_pretrained(path)
    return model, path


def overrides(*extra: str) -> list[str]:
    return ["data.frame_step=2", f"data.dataset_fpcs=[{FRAMES}]", f"data.val_dataset_fpcs=[{FRAMES}]",
            f"data.crop_size={SIDE}", f"data.patch_size={PATCH}", "model.model_name=videomae_small",
            *extra]  # fmt: skip


def clip(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, FRAMES, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_hf_videomae_model_features_equal_transformers(tmp_path, mean_pooling):
    theirs, path = hf_videomae(tmp_path, "hf", mean_pooling)
    encoder = build_encoder(load_config(None, overrides(f"meta.pretrain_checkpoint={path}"))).eval()
    assert family_of_module(encoder).name == "videomae" and encoder.depth == 2 and encoder.embed_dim == 48
    with torch.no_grad():
        expected = theirs(pixel_values=clip().transpose(1, 2)).last_hidden_state
        assert (encoder(clip()) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_hf_videomae_classifier_logits_equal_transformers(tmp_path, mean_pooling):
    theirs, path = hf_videomae(tmp_path, "hf_cls", mean_pooling, classes=5)
    config = load_config(None, overrides(f"meta.pretrain_checkpoint={path}", f"meta.classifier_checkpoint={path}"))
    model = build_model(config, 5).eval()
    assert isinstance(model.classifier, LinearClassifier)
    assert model.classifier.pooling == ("mean" if mean_pooling else "first")
    with torch.no_grad():
        expected = theirs(pixel_values=clip().transpose(1, 2)).logits
        assert (model(clip()) - expected).abs().max().item() <= 1e-4


def test_hf_vjepa2_directory_for_a_videomae_name_is_one_clear_error(tmp_path):
    from harness.config import ConfigError

    _, path = hf_videomae(tmp_path, "hf")
    with pytest.raises(ConfigError, match="videomae model of the videomae family; model.model_name is of the vit"):
        build_encoder(load_config(None, overrides(f"meta.pretrain_checkpoint={path}", "model.model_name=vit_tiny")))


def test_videomae_pth_layouts_load(tmp_path):
    """VideoMAE's fine-tuned files (``module``/``model`` key, ``fc_norm``/``head``) and its
    pre-training files (``encoder.*`` plus a decoder) load strictly into the same names."""
    torch.manual_seed(0)
    source = create_encoder("videomae_small", img_size=SIDE, num_frames=FRAMES, depth=2, init_values=0.1)
    head = LinearClassifier(384, 7)
    finetuned = {**source.state_dict(), **head.state_dict()}
    torch.save({"module": finetuned, "epoch": 3}, tmp_path / "ft.pth")
    pretrain = {f"encoder.{k}": v for k, v in source.state_dict().items()}
    pretrain.update({"decoder.blocks.0.norm1.weight": torch.ones(4), "encoder_to_decoder.weight": torch.ones(4, 4),
                     "mask_token": torch.zeros(1, 1, 4)})  # fmt: skip
    torch.save({"model": pretrain}, tmp_path / "pt.pth")
    for file in ("ft.pth", "pt.pth"):
        target = create_encoder("videomae_small", img_size=SIDE, num_frames=FRAMES, depth=2, init_values=0.5)
        load_encoder(target, tmp_path / file, strict=file == "ft.pth")
        assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    loaded = LinearClassifier(384, 7)
    load_classifier(loaded, tmp_path / "ft.pth", family="videomae")
    assert torch.equal(loaded.head.weight, head.head.weight)


@pytest.mark.parametrize("name", ["vit_tiny", "vit_tiny_rope", "videomae_small"])
def test_every_family_keeps_the_encoder_contract(name):
    """timm's habit: the same checks for every registered family."""
    family = family_of(name)
    settings = EncoderSettings(img_size=SIDE, num_frames=FRAMES, depth=2, drop_path_rate=0.1)
    torch.manual_seed(4)
    encoder = family.create(name, settings)
    tokens = encoder(clip())
    assert tokens.shape == (2, (FRAMES // 2) * (SIDE // 16) ** 2, encoder.embed_dim)
    tokens.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters()), "a parameter got no gradient"
    assert len(encoder.blocks) == 2
    ids = {n: encoder.layer_id(n) for n, _ in encoder.named_parameters()}
    assert min(ids.values()) == 0 and max(ids.values()) <= encoder.num_layers - 1
    assert ids["patch_embed.proj.weight"] == 0 and ids["blocks.1.norm1.weight"] == 2
    flops = encoder.forward_flops(FRAMES, SIDE, SIDE)
    assert flops > 0 and encoder.forward_flops(2 * FRAMES, SIDE, SIDE) > 2 * flops * 0.99
    # built on the meta device and materialised: the weights of a direct build with the same seed
    torch.manual_seed(9)
    direct = family.create(name, settings).state_dict()
    lazy = family.create(name, settings, device="meta")
    assert all(p.is_meta for p in lazy.parameters())
    torch.manual_seed(9)
    materialize(lazy)
    assert all(torch.equal(lazy.state_dict()[k], v) for k, v in direct.items())
    buffers = dict(lazy.named_buffers())
    assert all(torch.equal(buffers[k], v) for k, v in family.create(name, settings).named_buffers())


def test_videomae_layer_decay_follows_videomae(tmp_path):
    from harness.training.optim import param_groups

    config = load_config(None, overrides("optimization.layer_decay=0.5", "model.depth=2", "meta.finetune_encoder=true"))
    model = build_model(config, 3)
    scale = {name: g["lr_scale"] for g in param_groups(model, layer_decay=0.5) for name in g["names"]}
    # VideoMAE: num_layers = depth + 2; scale = decay ** (num_layers - 1 - layer_id)
    assert scale["encoder.patch_embed.proj.weight"] == pytest.approx(0.5**3)
    assert scale["encoder.blocks.0.attn.q_bias"] == pytest.approx(0.5**2)
    assert scale["encoder.blocks.1.mlp.fc2.weight"] == pytest.approx(0.5)
    assert scale["classifier.head.weight"] == 1.0
