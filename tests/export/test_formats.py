"""Every export format, loaded back by its own runtime, gives the harness's logits."""

import json
import stat

import numpy as np
import pytest
import torch

import harness
from harness.core.errors import UserError
from harness.export.cli import main
from harness.export.model_io import load_classifier
from harness.export.writing import export
from tests.conftest import tiny_overrides

NAMES = ["right", "left", "down", "up"]


@pytest.fixture(scope="module")
def reference(trained_run):
    model, preprocessing = load_classifier(trained_run)
    clips = torch.randn(3, 1, 3, preprocessing.frames_per_clip, preprocessing.crop_size, preprocessing.crop_size,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    with torch.no_grad():
        return clips, model(clips), preprocessing


def _described(out, fmt):
    description = json.loads((out / "model.json").read_text())
    assert description["format"] == fmt and description["num_classes"] == 4
    assert [description["label_map"][str(i)] for i in range(4)] == NAMES
    assert description["preprocessing"]["class_names"] == NAMES and description["preprocessing"]["crop_size"] == 32
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, f"{path.name} is readable by the group"
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_safetensors_loads_back_with_its_preprocessing(trained_run, reference, tmp_path):
    clips, expected, preprocessing = reference
    assert main([str(trained_run), str(tmp_path / "out")]) == 0
    _described(tmp_path / "out", "safetensors")
    model, loaded = harness.load_classifier(tmp_path / "out")
    assert loaded == preprocessing and loaded.class_names == NAMES
    with torch.no_grad():
        torch.testing.assert_close(model(clips), expected, rtol=0, atol=1e-6)


def test_pt2_runs_any_batch_size(trained_run, reference, tmp_path):
    clips, expected, _ = reference
    export(trained_run, tmp_path / "out", "pt2")
    _described(tmp_path / "out", "pt2")
    program = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(program(clips), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(program(clips[:1]), expected[:1], rtol=0, atol=1e-4)


def test_onnx_runtime_reproduces_the_logits(trained_run, reference, tmp_path):
    import onnxruntime

    clips, expected, _ = reference
    export(trained_run, tmp_path / "out", "onnx")
    _described(tmp_path / "out", "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["clips"]
    for batch in (3, 1):
        (logits,) = session.run(None, {"clips": clips[:batch].numpy()})
        np.testing.assert_allclose(logits, expected[:batch].numpy(), rtol=0, atol=1e-4)


def test_hugging_face_directory_loads_in_transformers(trained_run, reference, tmp_path):
    import transformers  # the test extra installs it

    clips, expected, _ = reference
    export(trained_run, tmp_path / "out", "hf")
    theirs = transformers.AutoModelForVideoClassification.from_pretrained(tmp_path / "out").eval()
    assert type(theirs).__name__ == "VJEPA2ForVideoClassification"
    assert [theirs.config.id2label[i] for i in range(4)] == NAMES
    with torch.no_grad():
        logits = theirs(pixel_values_videos=clips[:, 0].transpose(1, 2)).logits  # [B, T, C, H, W]
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    processor = transformers.AutoVideoProcessor.from_pretrained(tmp_path / "out")
    # transformers' processor resizes to int(crop x 256/224) whatever it is given (36 here; the harness rounds: 37)
    assert processor.crop_size["height"] == 32 and processor.size["shortest_edge"] == int(32 * 256 / 224)
    # ... and the harness reads it back as a classifier directory too.
    model, preprocessing = load_classifier(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(model(clips), expected, rtol=0, atol=1e-4)
    assert preprocessing.class_names == NAMES


def test_models_transformers_cannot_hold_are_refused_with_the_reason(demo_root, tmp_path):
    from harness.config import load_config
    from harness.training import Trainer

    Trainer(load_config(None, tiny_overrides(demo_root, tmp_path / "run", "optimization.epochs=1"))).fit()
    with pytest.raises(UserError, match="sin-cos position tables; Hugging Face's V-JEPA 2 has RoPE only"):
        export(tmp_path / "run", tmp_path / "out", "hf")
    assert not (tmp_path / "out" / "config.json").exists()


def test_a_vjepa21_model_exports_every_format_but_hugging_faces(demo_root, tmp_path, monkeypatch):
    # V-JEPA 2.1 (two hierarchical levels joined along channels) through safetensors, torch.export
    # and ONNX Runtime; transformers has no 2.1 model, so the hf format is refused in one line
    import onnxruntime

    from harness.config import load_config
    from harness.training import Trainer
    from tests.images import tiny_vjepa21_sizes

    monkeypatch.setitem(*tiny_vjepa21_sizes())
    run = tmp_path / "run"
    overrides = tiny_overrides(demo_root, run, "model.model_name=vjepa2_1_vit_tiny_test", "model.depth=4",
                               "model.out_layers=[1,3]", "optimization.epochs=1", "optimization.ipe=2")  # fmt: skip
    Trainer(load_config(None, overrides)).fit()
    model, _ = load_classifier(run)
    clips = torch.randn(2, 1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(clips)
    export(run, tmp_path / "safetensors", "safetensors")
    loaded, _ = harness.load_classifier(tmp_path / "safetensors")
    export(run, tmp_path / "pt2", "pt2")
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2")).module()
    export(run, tmp_path / "onnx", "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(program(clips), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"clips": clips.numpy()})[0], expected.numpy(), rtol=0, atol=1e-4)
    with pytest.raises(UserError, match="no exporter for the vjepa2.1 model family"):
        export(run, tmp_path / "hf", "hf")
