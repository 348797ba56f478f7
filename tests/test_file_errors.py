"""A damaged or misplaced file ends in one line naming it (exit status 2), before any work is
lost: exports, Hugging Face directories, checkpoints, output paths, folders given as files."""

import json
import shutil
from pathlib import Path

import pytest

from harness.config import load_config
from harness.config.cli import main as config_main
from harness.core.errors import UserError
from harness.data.listing import ListingError, read_listing
from harness.evaluate.cli import main as evaluate_main
from harness.export.cli import main as export_main
from harness.predict.cli import main as predict_main
from tests.export.test_export_trust import tiny_export


def one_line(capsys, *parts) -> str:
    """The single error line printed, checked to contain every part."""
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith(("error: ", "config error: ")), error
    for part in parts:
        assert str(part) in error, error
    return error


@pytest.fixture(autouse=True)
def fresh_root_logging():
    """Commands call ``logging.basicConfig``: a handler left by an earlier test writes to that test's
    closed capture stream, and its "Logging error" would be read as this command's output."""
    import logging

    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers.clear()
    yield
    root.handlers[:] = kept


@pytest.fixture(scope="module")
def hf_directory(tmp_path_factory) -> Path:
    """A small ``VJEPA2ForVideoClassification`` as ``transformers`` saves it."""
    import transformers  # the test extra installs it

    folder = tmp_path_factory.mktemp("hf") / "model"
    config = transformers.VJEPA2Config(hidden_size=96, num_hidden_layers=1, num_attention_heads=4, num_pooler_layers=1,
                                       crop_size=32, frames_per_clip=4, pred_hidden_size=48, pred_num_hidden_layers=1,
                                       pred_num_attention_heads=4, num_labels=3)  # fmt: skip
    transformers.VJEPA2ForVideoClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "model"
    tiny_export(folder)
    return folder


def damaged_copy(source: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    damage(folder)
    return folder


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def without_file_records(folder: Path) -> None:
    """As an export written before model.json recorded its files."""
    description = json.loads((folder / "model.json").read_text())
    del description["files"]
    (folder / "model.json").write_text(json.dumps(description))


EXPORT_DAMAGE = {
    "zero-byte weights": (lambda f: truncate(f / "model.safetensors", 0), "model.safetensors has 0 bytes"),
    "truncated weights of an older export": (
        lambda f: (without_file_records(f), truncate(f / "model.safetensors", 3000)),
        "model.safetensors: truncated",
    ),
    "zero-byte weights of an older export": (
        lambda f: (without_file_records(f), truncate(f / "model.safetensors", 0)),
        "model.safetensors: 0 bytes, too short for a safetensors file",
    ),
    "broken model.json": (lambda f: (f / "model.json").write_text('{"config": '), "model.json cannot be read"),
}


@pytest.mark.parametrize("case", EXPORT_DAMAGE)
def test_a_damaged_export_folder_is_named(exported, tmp_path, capsys, case):
    damage, expected = EXPORT_DAMAGE[case]
    folder = damaged_copy(exported, tmp_path, damage)
    assert export_main([str(folder), str(tmp_path / "out"), "--format", "pt2"]) == 2
    one_line(capsys, folder, expected, "export the model again")
    assert not (tmp_path / "out").exists()


def no_hidden_size(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))


HF_DAMAGE = {
    "zero-byte weights": (lambda f: truncate(f / "model.safetensors", 0), "model.safetensors: 0 bytes"),
    "truncated weights": (lambda f: truncate(f / "model.safetensors", 3000), "model.safetensors: truncated"),
    "config.json without hidden_size": (no_hidden_size, "config.json: no hidden_size"),
}


@pytest.mark.parametrize("case", HF_DAMAGE)
def test_a_damaged_hugging_face_directory_is_named_by_predict_export_and_train(hf_directory, tmp_path, capsys,
                                                                               case):  # fmt: skip
    damage, expected = HF_DAMAGE[case]
    folder = damaged_copy(hf_directory, tmp_path, damage)
    assert predict_main([str(folder), str(tmp_path / "video.mp4"), "--workers", "0"]) == 2
    one_line(capsys, folder, expected)
    assert export_main([str(folder), str(tmp_path / "out")]) == 2
    one_line(capsys, folder, expected)
    from harness.training.assemble import build_model

    config = load_config(None, ["model.model_name=vit_tiny_rope", "data.crop_size=32", "data.dataset_fpcs=[4]",
                                f"meta.pretrain_checkpoint={folder}"])  # fmt: skip
    with pytest.raises(UserError) as raised:  # train builds its model the same way
        build_model(config, 3)
    assert expected in str(raised.value) and str(folder) in str(raised.value)


def test_a_corrupt_state_file_given_to_export_is_named(trained_run, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint"
    from harness.training.state.checkpoint import resolve_checkpoint

    shutil.copytree(resolve_checkpoint(trained_run), checkpoint)
    state = bytearray((checkpoint / "state.pt").read_bytes())
    state[100:4000] = bytes(3900)  # same size: only its contents tell
    (checkpoint / "state.pt").write_bytes(state)
    assert export_main([str(checkpoint), str(tmp_path / "out")]) == 2
    one_line(capsys, checkpoint / "state.pt", "cannot be read", "the checkpoint is damaged")


def test_an_unusable_predict_output_is_refused_before_any_prediction(tmp_path, capsys):
    (tmp_path / "taken.csv").mkdir()
    (tmp_path / "notes").write_text("a file\n")
    model = tmp_path / "no-such-model"  # never read: the output is checked first
    assert predict_main([str(model), str(tmp_path), "--output", str(tmp_path / "taken.csv")]) == 2
    one_line(capsys, "--output", tmp_path / "taken.csv", "is a folder")
    assert predict_main([str(model), str(tmp_path), "--output", str(tmp_path / "notes" / "p.csv")]) == 2
    one_line(capsys, "--output", f"{tmp_path / 'notes'} is a file, not a folder")

    assert predict_main([str(model), str(tmp_path), "--stride-seconds", "2"]) == 2  # no window to step
    one_line(capsys, "--stride-seconds needs --window-seconds")


def test_files_where_folders_are_needed_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "notes").write_text("a file\n")
    config = tmp_path / "no-such-config.yaml"  # never read: the output is checked first
    assert evaluate_main(["--config", str(config), "--checkpoint", "x", "--out", str(tmp_path / "notes")]) == 2
    one_line(capsys, "--out", f"{tmp_path / 'notes'} is a file, not a folder")
    assert evaluate_main(["--config", str(config), "--checkpoint", "x", "--out", str(tmp_path / "notes" / "e")]) == 2
    one_line(capsys, "--out", f"{tmp_path / 'notes'} is a file")
    assert config_main(["--save", str(tmp_path / "notes" / "config.yaml"), "data.batch_size=2"]) == 2
    one_line(capsys, "--save", f"{tmp_path / 'notes'} is a file, not a folder")
    assert (tmp_path / "notes").read_text() == "a file\n"


def test_a_folder_given_as_a_config_or_listing_is_called_a_folder(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("data:\n  batch_size: 2\n")
    assert config_main(["--config", str(tmp_path / "run"), "--get", "data.batch_size"]) == 2
    one_line(capsys, f"config file {tmp_path / 'run'} is a folder", f"(e.g. {tmp_path / 'run' / 'config.yaml'})")
    with pytest.raises(ListingError, match="is a folder, not a listing file"):
        read_listing(tmp_path / "run")
