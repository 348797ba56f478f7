import pytest
import torch
from safetensors.torch import save_file

from harness.models import AttentiveClassifier, CheckpointError, VideoClassifier, load_classifier, load_encoder
from harness.models.checkpoint_io import token_grids
from harness.models.vit import interpolate_position_table
from tests.models.test_vit import tiny_encoder, vjepa2_resized_table


def prefixed(state, prefix):
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture()
def source():
    torch.manual_seed(1)
    encoder = tiny_encoder()
    encoder.init_std = 0.05  # different from a fresh tiny_encoder()
    encoder.init_weights()
    return encoder


@pytest.mark.parametrize(
    "layout",
    [
        lambda s: s,
        lambda s: {"encoder": prefixed(s, "module.backbone."), "epoch": 3},
        lambda s: {"target_encoder": prefixed(s, "module."), "encoder": {}},
        lambda s: {"encoder": prefixed(s, "backbone.")},
    ],
    ids=["plain", "encoder-module-backbone", "target_encoder-module", "encoder-backbone"],
)
def test_encoder_layouts_load_exactly(tmp_path, source, layout):
    path = tmp_path / "ckpt.pt"
    torch.save(layout(source.state_dict()), path)
    target = tiny_encoder()
    report = load_encoder(target, path)
    assert len(report.loaded) == len(source.state_dict()) and not report.missing
    x = torch.randn(1, 3, 4, 32, 32)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_safetensors_and_saved_model_roundtrip(tmp_path, source):
    path = tmp_path / "enc.safetensors"
    save_file(source.state_dict(), str(path))
    target = tiny_encoder()
    load_encoder(target, path)
    x = torch.randn(2, 3, 4, 32, 32)
    assert torch.equal(target(x), source(x))


def test_missing_encoder_weights_are_an_error(tmp_path, source):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("blocks.3.")}
    torch.save({"encoder": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"randomly initialised .*blocks\.3\."):
        load_encoder(tiny_encoder(), tmp_path / "partial.pt")
    report = load_encoder(tiny_encoder(), tmp_path / "partial.pt", allow_random_init=True)
    assert len(report.missing) == 12  # 2 norms x 2 + qkv, proj, fc1, fc2 weights and biases


def test_wrong_model_size_names_the_mismatch(tmp_path):
    torch.save({"encoder": tiny_encoder("vit_small").state_dict()}, tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match="mismatched: .*384"):
        load_encoder(tiny_encoder(), tmp_path / "small.pt")


def test_unexpected_keys_rejected_unless_not_strict(tmp_path, source):
    state = {**source.state_dict(), "predictor_embed.weight": torch.zeros(2)}
    torch.save({"encoder": state}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_encoder(tiny_encoder(), tmp_path / "extra.pt")
    report = load_encoder(tiny_encoder(), tmp_path / "extra.pt", strict=False)
    assert report.unexpected == ["predictor_embed.weight"]


def test_no_encoder_in_file(tmp_path):
    torch.save({"opt": {"lr": torch.tensor(1.0)}, "epoch": 1}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="no encoder state"):
        load_encoder(tiny_encoder(), tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tiny_encoder(), tmp_path / "nope.pt")


@pytest.mark.parametrize("img_size,num_frames", [(64, 8), (32, 8)], ids=["space-and-time", "time"])
def test_position_table_from_another_grid_is_interpolated(tmp_path, img_size, num_frames):
    """A table saved for grid (4, 4, 4) or (4, 2, 2) is loaded into the (2, 2, 2) model as V-JEPA 2's
    ``interpolate_pos_encoding`` resizes it (trilinear; fewer time steps only: the first ones)."""
    other = tiny_encoder(img_size=img_size, num_frames=num_frames)
    torch.save({"target_encoder": other.state_dict()}, tmp_path / "big.pt")
    target = tiny_encoder()
    report = load_encoder(target, tmp_path / "big.pt")
    count = other.pos_embed.shape[1]
    assert report.interpolated == [f"pos_embed (1, {count}, 192) -> (1, 8, 192)"]
    expected = vjepa2_resized_table(other.pos_embed, img_size, num_frames, 4, 32)
    assert torch.equal(target.pos_embed, expected), "bit-equal: see test_position_table_for_another_grid_is_vjepa2s"


def test_saved_grid_is_read_from_the_table_not_guessed_from_its_length(tmp_path):
    """1568 tokens are V-JEPA 2's 16 frames x 224 (grid 8x14x14) but also 2x28x28: the sin-cos values
    tell which, and the 16 x 256 model gets what V-JEPA 2 makes of the 8x14x14 table."""
    small = {"embed_dim": 24, "depth": 1, "num_heads": 3, "num_frames": 16}
    other = tiny_encoder(img_size=224, **small)
    torch.save({"target_encoder": other.state_dict()}, tmp_path / "vitl.pt")
    target = tiny_encoder(img_size=256, **small)
    assert load_encoder(target, tmp_path / "vitl.pt").interpolated == ["pos_embed (1, 1568, 24) -> (1, 2048, 24)"]
    assert torch.equal(target.pos_embed, vjepa2_resized_table(other.pos_embed, 224, 16, 16, 256))
    # No sin-cos table of any grid: which grid it was is unknown, so it is not resized but refused.
    torch.save({"target_encoder": {**other.state_dict(), "pos_embed": torch.randn(1, 1568, 24)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_encoder(target, tmp_path / "odd.pt")


def test_a_rectangular_grid_is_read_from_its_table_too(tmp_path):
    """A table saved by a run of [32, 48] crops (grid 2x2x3: 12 tokens, also 3x2x2, 1x3x4...) loads
    into a square model and back, resized from the grid its values were made for."""
    rectangular = tiny_encoder(img_size=(32, 48))
    torch.save({"target_encoder": rectangular.state_dict()}, tmp_path / "rect.pt")
    square = tiny_encoder(img_size=64)
    assert load_encoder(square, tmp_path / "rect.pt").interpolated == ["pos_embed (1, 12, 192) -> (1, 32, 192)"]
    assert torch.equal(square.pos_embed, interpolate_position_table(rectangular.pos_embed, (2, 2, 3), (2, 4, 4)))
    fresh = tiny_encoder(img_size=64)  # (the table just loaded is no sin-cos table of any grid any more)
    torch.save({"target_encoder": fresh.state_dict()}, tmp_path / "square.pt")
    wide = tiny_encoder(img_size=(16, 64))
    load_encoder(wide, tmp_path / "square.pt")
    assert torch.equal(wide.pos_embed, interpolate_position_table(fresh.pos_embed, (2, 4, 4), (2, 1, 4)))
    assert (2, 2, 3) in token_grids(12) and (2, 3, 2) in token_grids(12) and len(set(token_grids(12))) == 18


@pytest.mark.parametrize("layout", ["classifiers", "classifier"])
def test_probe_layouts(tmp_path, layout):
    torch.manual_seed(3)
    head = AttentiveClassifier(192, 7, num_heads=3, depth=2)
    other = AttentiveClassifier(192, 7, num_heads=3, depth=2)
    state = prefixed(head.state_dict(), "module.")
    blob = (
        {"classifiers": [prefixed(other.state_dict(), "module."), state]}
        if layout == "classifiers"
        else {"classifier": state}
    )
    torch.save(blob, tmp_path / "probe.pt")
    fresh = AttentiveClassifier(192, 7, num_heads=3, depth=2)
    load_classifier(fresh, tmp_path / "probe.pt", index=1 if layout == "classifiers" else 0)
    tokens = torch.randn(2, 5, 192)
    torch.testing.assert_close(fresh(tokens), head(tokens), rtol=0, atol=0)


def test_saved_and_reloaded_video_classifier_is_identical(tmp_path):
    model = VideoClassifier(tiny_encoder("vit_tiny_rope"), AttentiveClassifier(192, 4, num_heads=3)).eval()
    torch.save({"encoder": model.encoder.state_dict(), "classifier": model.classifier.state_dict()}, tmp_path / "m.pt")
    clone = VideoClassifier(tiny_encoder("vit_tiny_rope"), AttentiveClassifier(192, 4, num_heads=3)).eval()
    load_encoder(clone.encoder, tmp_path / "m.pt")
    load_classifier(clone.classifier, tmp_path / "m.pt")
    clips = torch.randn(2, 2, 3, 4, 32, 32)
    assert torch.equal(clone(clips), model(clips))


def test_safetensors_are_memory_mapped_and_equal_safetensors_own_reader(tmp_path):
    from safetensors.torch import load_file, save_file

    from harness.models.hf_directory import read_safetensors_mapped

    tensors = {"w": torch.randn(3, 4), "h": torch.randn(5).to(torch.bfloat16), "i": torch.arange(6).view(2, 3),
               "empty": torch.zeros(0, 3), "half": torch.randn(2, 2).half()}  # fmt: skip
    save_file(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    mapped, reference = read_safetensors_mapped(tmp_path / "m.safetensors"), load_file(tmp_path / "m.safetensors")
    assert set(mapped) == set(reference)
    for name, tensor in reference.items():
        assert mapped[name].dtype == tensor.dtype and torch.equal(mapped[name], tensor)
    mapped["w"].add_(1)  # copy-on-write: the file is unchanged
    assert torch.equal(load_file(tmp_path / "m.safetensors")["w"], tensors["w"])
