"""An export folder is complete or absent and cannot lie: one rename publishes it, an earlier
export is replaced whole, and loading refuses files that differ from what ``model.json`` records."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness.config import load_config
from harness.config.loading import to_dict
from harness.core.errors import UserError
from harness.export.cli import main
from harness.export.model_io import Preprocessing, build_plain_model, load_classifier
from harness.export.writing import write_export

NAMES = ["a", "b", "c"]
TINY = ["model.model_name=vit_tiny_rope", "model.depth=1", "data.crop_size=32", "data.dataset_fpcs=[4]",
        "data.val_dataset_fpcs=[4]", "meta.finetune_encoder=true", "model.pooler_norm_eps=1e-6",
        "model.attn_pooler_depth=1"]  # fmt: skip


def tiny_export(out: Path, fmt: str = "safetensors", seed: int = 0, *extra: str) -> torch.nn.Module:
    """Export a randomly initialised one-block classifier (V-JEPA 2's architecture) into ``out``."""
    config = load_config(None, [*TINY, *extra])
    torch.manual_seed(seed)
    model = build_plain_model(config, len(NAMES)).eval()
    preprocessing = Preprocessing.from_config(config, NAMES)
    write_export(model, preprocessing, {"source": f"seed {seed}", "config": to_dict(config)}, out, fmt)
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    clips = torch.randn(2, 1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(clips)


def siblings(out: Path) -> list[str]:
    """The temporary folders an export left beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_an_export_over_another_format_leaves_only_the_new_files(tmp_path):
    import transformers  # noqa: F401  (the test extra installs it; the export imports it)

    out = tmp_path / "model"
    tiny_export(out, "hf", seed=0)
    assert (out / "config.json").is_file()
    new = tiny_export(out, "safetensors", 1, "model.depth=2")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"], "no file of the old export"
    loaded, _ = load_classifier(out)
    torch.testing.assert_close(logits(loaded), logits(new), rtol=0, atol=0)
    assert siblings(out) == []


def test_weights_of_another_export_are_refused_naming_the_file(tmp_path, capsys):
    tiny_export(tmp_path / "one", seed=0)
    tiny_export(tmp_path / "two", seed=1)
    # what a kill between per-file renames left: new weights beside the old description
    shutil.copy(tmp_path / "two" / "model.safetensors", tmp_path / "one" / "model.safetensors")
    assert main([str(tmp_path / "one"), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"{tmp_path / 'one' / 'model.safetensors'} has other contents" in error
    assert "export the model again" in error and not (tmp_path / "out").exists()
    records = json.loads((tmp_path / "two" / "model.json").read_text())["files"]["model.safetensors"]
    assert records["bytes"] == (tmp_path / "two" / "model.safetensors").stat().st_size


def test_a_crash_between_the_renames_leaves_the_export_absent_never_mixed(tmp_path, monkeypatch):
    out = tmp_path / "model"
    old = tiny_export(out, seed=0)
    renames, rename = [], os.rename

    def crash_after_moving_the_old_one_aside(source, target):
        renames.append((Path(source).name, Path(target).name))
        if len(renames) > 1:  # the process dies: the new folder is not renamed in, nothing restores the old one
            raise KeyboardInterrupt
        rename(source, target)

    monkeypatch.setattr(os, "rename", crash_after_moving_the_old_one_aside)
    with pytest.raises(KeyboardInterrupt):
        tiny_export(out, seed=1)
    monkeypatch.undo()
    assert not out.exists(), "the old export was moved aside whole"
    (aside,) = [tmp_path / name for name in siblings(out) if ".old-" in name]
    loaded, _ = load_classifier(aside)  # the old export, whole
    torch.testing.assert_close(logits(loaded), logits(old), rtol=0, atol=0)


def test_a_failed_export_keeps_the_earlier_one_and_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    old = tiny_export(out, seed=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="sin-cos position tables"):
        tiny_export(out, "hf", 1, "model.model_name=vit_tiny")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and siblings(out) == []
    torch.testing.assert_close(logits(load_classifier(out)[0]), logits(old), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["file", "folder of other files"])
def test_an_out_that_is_not_an_export_is_refused_before_any_work(tmp_path, capsys, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("notes\n")
        expected = f"export OUT: {out} is a file, not a folder; give a folder"
    else:
        out.mkdir()
        (out / "notes.txt").write_text("notes\n")
        expected = f"export OUT: {out} is not empty and holds no export (no model.json)"
    assert main([str(tmp_path / "no-such-run"), str(out)]) == 2, "refused before the source is read"
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and expected in error
    assert (out.read_text() if kind == "file" else (out / "notes.txt").read_text()) == "notes\n"


def test_an_empty_folder_takes_the_export(tmp_path):
    (tmp_path / "out").mkdir()
    tiny_export(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.json", "model.safetensors"]
