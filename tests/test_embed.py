"""harness.embed: features equal the model's own outputs (ours, V-JEPA 2's code, transformers'),
every kind of input, windows, resume, ranks, bad inputs, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.listing import read_listing
from harness.data.transforms import normalize_clips
from harness.data.units import Unit, VideoUnits, collate_units
from harness.embed import read_index, read_shard
from harness.embed.cli import main
from harness.embed.store import EmbeddingFolder
from harness.export.model_io import Preprocessing, load_classifier
from tests.deadline import time_left

REPO = Path(__file__).resolve().parent.parent
ALL = ["--features", "pooled,probe,levels,tokens", "--levels", "0,1"]


def clips_of(videos: list[str], preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised clips ``[B, K, C, T, H, W]`` and their frame indices, as the command takes them."""
    dataset = VideoUnits([Unit((i,), str(video)) for i, video in enumerate(videos)], preprocessing, "auto")
    _, batch, failed = collate_units([dataset[i] for i in range(len(videos))])
    assert not failed
    return normalize_clips(batch.clips, preprocessing.mean, preprocessing.std), batch.clip_indices


def features_of(folder: Path) -> tuple[list[dict[str, str]], dict[str, np.ndarray]]:
    """The index rows and, for the embedded ones, each feature's rows in index order."""
    rows = read_index(folder)
    shards: dict[str, dict[str, np.ndarray]] = {}
    values: dict[str, list[np.ndarray]] = {}
    for row in rows:
        if row["shard"]:
            shard = shards.setdefault(row["shard"], read_shard(folder, row["shard"]))
            for name, array in shard.items():
                values.setdefault(name, []).append(np.array(array[int(row["row"])]))
    return rows, {name: np.stack(arrays) for name, arrays in values.items()}


def assert_close(ours: np.ndarray, expected: torch.Tensor, atol: float = 1e-5) -> None:
    assert ours.shape == tuple(expected.shape)
    assert np.abs(ours - expected.numpy()).max() <= atol


def test_features_are_the_models_own_outputs(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "out"
    videos = sorted(str(p) for p in (demo_root / "val").glob("*.mp4"))
    assert main([str(trained_run), str(demo_root / "val"), "--output", str(out), *ALL, "--workers", "0",
                 "--rows-per-shard", "3", "--no-progress"]) == 0  # fmt: skip
    assert "embedded 8 videos, 0 unreadable, in 3 shards" in capsys.readouterr().out
    rows, values = features_of(out)
    assert [row["video"] for row in rows] == videos
    assert [(row["shard"], row["row"]) for row in rows[:4]] == [("shard-000000", str(i)) for i in range(3)] + [
        ("shard-000001", "0")
    ]
    model, preprocessing = load_classifier(trained_run)
    clips, indices = clips_of(videos, preprocessing)
    encoder = model.encoder
    with torch.no_grad():
        tokens = encoder(clips.flatten(0, 1))  # one clip, one view per video
        assert_close(values["pooled"], tokens.mean(dim=1))
        pooled = model.classifier.pooler(tokens).squeeze(1)
        assert_close(values["probe"], pooled)
        logits = model(clips, indices, preprocessing.num_views)
        probe_logits = model.classifier.linear(torch.from_numpy(values["probe"]))  # what the head reads
        torch.testing.assert_close(probe_logits, logits, atol=1e-5, rtol=0)
        encoder.out_layers = (0, 1)  # the encoder's own multi-level output: [B, 2 N, D], each level normalised
        levels = encoder(clips.flatten(0, 1)).unflatten(1, (2, -1)).mean(dim=2)
        encoder.out_layers = None
        assert_close(values["levels"], levels)
        grid = (len(videos), 1, 2, 2, 2, tokens.shape[-1])  # clips x views, T', H', W', D: 4 frames / 2, 32 px / 16
        assert_close(values["tokens"], tokens.view(grid))
    description = json.loads((out / "embeddings.json").read_text())
    assert description["complete"] and description["counts"] == {"rows": 8, "embedded": 8, "failed": 0, "shards": 3}
    assert description["features"]["levels"]["shape"] == [2, 192]
    assert description["request"]["source"]["kind"] == "classifier"
    assert not (out / ".spool").exists()


def test_listings_manifests_unreadable_videos_npy_and_l2(trained_run, demo_root, demo_shards, video_dir, tmp_path):
    manifest = demo_shards / "val" / "manifest.json"
    out = tmp_path / "out"
    code = main([str(trained_run), str(demo_root / "val.csv"), str(manifest), str(video_dir / "not_video.mp4"),
                 "--output", str(out), "--format", "npy", "--normalize", "l2", "--rows-per-shard", "4",
                 "--workers", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    rows, values = features_of(out)
    listed = list(read_listing(demo_root / "val.csv").paths())
    samples = json.loads(manifest.read_text())["total_clips"]
    assert [row["video"] for row in rows[:9]] == [*listed, str(video_dir / "not_video.mp4")]
    assert rows[8]["error"] and rows[8]["shard"] == "" and len(rows) == 9 + samples
    assert all("#" in row["video"] and not row["error"] for row in rows[9:]), "the shards' samples, after the videos"
    assert [row["video"].split("#")[0] for row in rows[9:]] == sorted(row["video"].split("#")[0] for row in rows[9:])
    assert sorted(p.name for p in out.glob("shard-000000.*")) == ["shard-000000.pooled.npy"]
    assert np.allclose(np.linalg.norm(values["pooled"], axis=1), 1, atol=1e-5)
    # the listing's videos as embedded (not normalised) by the first test's way: the same directions
    model, preprocessing = load_classifier(trained_run)
    clips, _ = clips_of(listed, preprocessing)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encoder(clips.flatten(0, 1)).mean(dim=1), dim=-1)
    assert_close(values["pooled"][:8], expected)


def test_windows_of_a_long_video_and_a_video_that_cannot_be_opened(trained_run, video_dir, tmp_path):
    out = tmp_path / "out"
    code = main([str(trained_run), str(video_dir / "long_30fps.mp4"), str(video_dir / "zero.mp4"), "--output",
                 str(out), "--window-seconds", "1.5", "--stride-seconds", "1", "--rows-per-shard", "3", "--workers",
                 "0", "--no-progress"])  # fmt: skip
    assert code == 0
    rows = read_index(out)
    assert [r["window"] for r in rows] == ["0", "1", "2", "3", ""]
    assert [(r["start_s"], r["end_s"]) for r in rows[:4]] == [("0.0", "1.5"), ("1.0", "2.5"), ("2.0", "3.5"),
                                                                ("2.5", "4.0")]  # fmt: skip
    assert rows[4]["video"].endswith("zero.mp4") and rows[4]["error"] and not rows[4]["shard"]
    where = [(r["shard"], r["row"]) for r in rows]  # a video's windows may span shards
    assert where == [("shard-000000", "0"), ("shard-000000", "1"), ("shard-000000", "2"), ("shard-000001", "0"),
                     ("", "")]  # fmt: skip
    model, preprocessing = load_classifier(trained_run)
    dataset = VideoUnits([Unit((0, 2), str(video_dir / "long_30fps.mp4"), (60, 105))], preprocessing, "auto")
    _, batch, _ = collate_units([dataset[0]])
    with torch.no_grad():
        tokens = model.encoder(normalize_clips(batch.clips, preprocessing.mean, preprocessing.std).flatten(0, 1))
    assert_close(read_shard(out, "shard-000000")["pooled"][2:3], tokens.mean(dim=1))


def test_the_probe_of_a_classifier_joining_its_clips_is_what_its_head_reads():
    """``concat_tokens`` (V-JEPA 2's multi-clip evaluation, temporal table on): the probe pools
    each view over all its clips, so with one view the head's Linear of the probe vector is the
    model's logits; and the command offers the library's features."""
    from harness.embed import cli, features
    from harness.models import AttentiveClassifier, VideoClassifier, create_encoder

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_rope", img_size=32, num_frames=4, depth=2)
    model = VideoClassifier(encoder, AttentiveClassifier(192, 5, num_heads=3), clip_aggregation="concat_tokens",
                            temporal_pos_embed=True, max_frames=32).eval()  # fmt: skip
    clips = torch.randn(2, 3, 3, 4, 32, 32)  # 2 videos of 3 clips, 1 view
    indices = torch.arange(12).view(1, 3, 4).repeat(2, 1, 1)
    values = features.embed_clips(model, clips, indices, 1, ["probe", "pooled"])
    with torch.no_grad():
        logits = model(clips, indices, 1)
    torch.testing.assert_close(model.classifier.linear(values["probe"]), logits, atol=1e-5, rtol=0)
    assert values["pooled"].shape == (2, 192)
    assert cli.FEATURES == features.FEATURES


def test_bfloat16_features_stay_close_to_float32(trained_run, demo_root, tmp_path):
    videos = sorted(str(p) for p in (demo_root / "val").glob("*.mp4"))[:2]
    common = [str(trained_run), *videos, *ALL, "--workers", "0", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "fp32")]) == 0
    assert main([*common, "--output", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    (_, full), (_, half) = features_of(tmp_path / "fp32"), features_of(tmp_path / "bf16")
    for name, value in full.items():
        assert half[name].dtype == np.float32, "computed under bf16 autocast, saved as float32"
        assert np.abs(half[name] - value).max() <= 0.05 * np.abs(value).max(), name


def stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def test_a_stopped_run_continues_and_a_changed_command_is_refused(trained_run, demo_root, video_dir, tmp_path, capsys):
    out = tmp_path / "out"
    command = [str(trained_run), str(demo_root / "val"), str(video_dir / "not_video.mp4"), "--output", str(out),
               "--rows-per-shard", "3", "--workers", "0", "--no-progress", "--features", "pooled,tokens"]  # fmt: skip
    assert main(command) == 0
    first = features_of(out)
    shards = sorted(out.glob("shard-*.safetensors"))
    assert [p.name for p in shards] == ["shard-000000.safetensors", "shard-000001.safetensors",
                                        "shard-000002.safetensors"]  # fmt: skip
    before = {p.name: stat(p) for p in shards}
    # As a kill leaves it: shard 1 gone, shard 2 half written, a temporary file, no index yet.
    shards[1].unlink()
    shards[2].write_bytes(shards[2].read_bytes()[:100])
    (out / ".tmp-12345-shard-000003.safetensors").write_bytes(b"half")
    (out / "index.csv").unlink()
    assert main(command) == 0
    assert stat(shards[0]) == before[shards[0].name], "a finished shard is not written again"
    assert shards[1].is_file() and stat(shards[2]) != before[shards[2].name]
    assert not list(out.glob(".tmp-*"))
    second = features_of(out)
    assert second[0] == first[0]
    for name in first[1]:
        assert np.array_equal(second[1][name], first[1][name])
    capsys.readouterr()
    changed = [*command[:-1], "pooled"]
    assert main(changed) == 2
    assert "holds embeddings of another command (it differs in features)" in capsys.readouterr().err
    assert stat(shards[0]) == before[shards[0].name]
    assert main([*changed, "--overwrite"]) == 0
    assert read_shard(out, "shard-000000").keys() == {"pooled"}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main([*command[:4], str(foreign), *command[5:]]) == 2
    assert "is not empty and holds no embeddings" in capsys.readouterr().err
    (foreign / "parts").mkdir()
    (foreign / "parts" / "mine.txt").write_text("mine too")
    (foreign / "index.csv").write_text("my own index\n")
    assert main([*command[:4], str(foreign), *command[5:], "--overwrite"]) == 2, "--overwrite replaces embeddings only"
    assert "is not empty and holds no embeddings" in capsys.readouterr().err
    assert (foreign / "parts" / "mine.txt").is_file() and (foreign / "index.csv").read_text() == "my own index\n"
    assert main([*command[:4], str(foreign / "notes.txt"), *command[5:]]) == 2
    assert "--output: " in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "mine"
    held = EmbeddingFolder(out, "safetensors").lock()  # another run writing there
    assert main(changed) == 2
    assert "is being written by another harness.embed (PID" in capsys.readouterr().err
    EmbeddingFolder(out, "safetensors").unlock(held)


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["missing_model", "VIDEO"], "model not found: missing_model"),
        (["RUN", "VIDEO", "--features", "pooled,colour"], "--features colour: not a feature"),
        (["RUN", "VIDEO", "--features", "levels"], "--levels goes with --features levels"),
        (["RUN", "VIDEO", "--levels", "1"], "--levels goes with --features levels"),
        (["RUN", "VIDEO", "--stride-seconds", "1"], "--stride-seconds needs --window-seconds"),
        (["RUN", "VIDEO", "--rows-per-shard", "0"], "--rows-per-shard must be >= 1"),
        (["RUN", "VIDEO", "--model-name", "vit_large"], "--model-name: for an encoder alone"),
        (["RUN", "VIDEO", "--features", "levels", "--levels", "7"], "level 7: a 2-block encoder has levels 0 to 1"),
        (["RUN", "missing.mp4"], "input not found: missing.mp4"),
        (["RUN", "VIDEO", "--crop-size", "30"], "--frames 4 --crop-size 30: clips must fill the encoder's patches"),
        (["RUN", "VIDEO", "--crop-size", "32x40"], "--frames 4 --crop-size 32x40: clips must fill the encoder's"),
    ],
)
def test_bad_flags_and_sources_are_one_line(trained_run, video_dir, tmp_path, capsys, arguments, message):
    values = {"RUN": str(trained_run), "VIDEO": str(video_dir / "short_30fps.mp4")}
    arguments = [values.get(a, a) for a in arguments]
    assert main([*arguments, "--output", str(tmp_path / "out"), "--workers", "0", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and message in error[0], error


def test_crop_size_flag_is_one_side_or_height_by_width(tmp_path, capsys):
    from harness.embed.cli import parse_args

    common = ["MODEL", "VIDEO", "--output", str(tmp_path / "out")]
    assert parse_args([*common, "--crop-size", "32"]).crop_size == 32
    assert parse_args([*common, "--crop-size", "32x48"]).crop_size == [32, 48]
    with pytest.raises(SystemExit) as stopped:
        parse_args([*common, "--crop-size", "32x"])
    assert stopped.value.code == 2 and "argument --crop-size: '32x' is neither one side" in capsys.readouterr().err


def test_nothing_readable_is_exit_2(trained_run, video_dir, tmp_path, capsys):
    code = main([str(trained_run), str(video_dir / "zero.mp4"), str(video_dir / "truncated.mp4"), "--output",
                 str(tmp_path / "out"), "--workers", "0", "--no-progress"])  # fmt: skip
    assert code == 2
    assert "run failed: nothing could be embedded" in capsys.readouterr().err
    assert [bool(row["error"]) for row in read_index(tmp_path / "out")] == [True, True]


def test_a_vjepa2_pretraining_checkpoint_alone(demo_root, tmp_path, capsys):
    """A file in the layout V-JEPA 2's pretraining saves (``encoder``, ``target_encoder``...: DDP
    and wrapper prefixes), made by its own code: the target encoder is embedded, as its code computes."""
    import vjepa2.models.vision_transformer as vjepa2_vit  # test extra cc-vjepa2: V-JEPA 2's own modules

    torch.manual_seed(0)
    options = dict(img_size=32, num_frames=4, patch_size=16, tubelet_size=2, use_rope=True, out_layers=[5, 11])
    target, online = vjepa2_vit.vit_tiny(**options).eval(), vjepa2_vit.vit_tiny(**options).eval()
    saved = lambda model: {f"module.backbone.{k}": v for k, v in model.state_dict().items()}  # noqa: E731
    checkpoint = {"encoder": saved(online), "predictor": {}, "target_encoder": saved(target), "opt": {},
                  "scaler": None, "epoch": 10, "loss": 0.5, "batch_size": 4, "world_size": 8, "lr": 1e-4}  # fmt: skip
    torch.save(checkpoint, tmp_path / "latest.pt")
    videos = sorted(str(p) for p in (demo_root / "val").glob("*.mp4"))[:3]
    out = tmp_path / "out"
    command = [str(tmp_path / "latest.pt"), *videos, "--output", str(out), "--workers", "0", "--no-progress",
               "--frames", "4", "--crop-size", "32"]  # fmt: skip
    assert main([*command, "--model-name", "vit_tiny_rope", "--features", "pooled,levels,tokens", "--levels",
                 "5,11"]) == 0  # fmt: skip
    _, values = features_of(out)
    description = json.loads((out / "embeddings.json").read_text())
    preprocessing = Preprocessing.from_dict(description["request"]["preprocessing"])
    assert (preprocessing.frames_per_clip, preprocessing.crop_size, preprocessing.frame_step) == (4, 32, 4)
    clips, _ = clips_of(videos, preprocessing)
    with torch.no_grad():
        levels = target(clips.flatten(0, 1))  # its multi-level output: the normalised tokens of blocks 5 and 11
    assert_close(values["levels"], torch.stack([level.mean(dim=1) for level in levels], dim=1))
    assert_close(values["pooled"], levels[1].mean(dim=1))  # the last block's normalised tokens are the output
    assert_close(values["tokens"], levels[1].view(3, 1, 2, 2, 2, 192))
    capsys.readouterr()
    assert main([*command, "--output", str(tmp_path / "other")]) == 2
    assert "is an encoder file, which does not say its size: give --model-name" in capsys.readouterr().err
    assert main([*command, "--output", str(tmp_path / "other"), "--model-name", "vit_tiny_rope",
                 "--features", "probe"]) == 2  # fmt: skip
    assert "the probe feature needs a trained probe" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["vit", "videomae"])
def test_a_hugging_face_encoder_directory(demo_root, tmp_path, family):
    """``VJEPA2Model`` / ``VideoMAEModel`` directories made by ``transformers`` itself: ``pooled`` is
    the mean of their ``last_hidden_state`` on the same clips."""
    import transformers  # test extra: V-JEPA 2 and VideoMAE as Hugging Face ships them

    torch.manual_seed(1)
    sizes = dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, patch_size=16, tubelet_size=2)
    if family == "vit":
        config = transformers.VJEPA2Config(**sizes, crop_size=32, frames_per_clip=4, pred_hidden_size=48,
                                           pred_num_hidden_layers=1, pred_num_attention_heads=4)  # fmt: skip
        theirs = transformers.VJEPA2Model(config).eval()
    else:
        config = transformers.VideoMAEConfig(**sizes, image_size=32, num_frames=4, intermediate_size=192)
        theirs = transformers.VideoMAEModel(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    videos = sorted(str(p) for p in (demo_root / "val").glob("*.mp4"))[:3]
    out = tmp_path / "out"
    assert main([str(tmp_path / "hf"), *videos, "--output", str(out), "--workers", "0", "--no-progress"]) == 0
    _, values = features_of(out)
    request = json.loads((out / "embeddings.json").read_text())["request"]
    assert request["source"]["kind"] == "encoder" and request["source"]["family"] == family
    preprocessing = Preprocessing.from_dict(request["preprocessing"])
    assert (preprocessing.frames_per_clip, preprocessing.crop_size) == (4, 32), "the directory's clips"
    clips, _ = clips_of(videos, preprocessing)
    video = clips[:, 0].transpose(1, 2)  # transformers' layout [B, T, C, H, W]
    with torch.no_grad():
        if family == "vit":
            hidden = theirs(pixel_values_videos=video, skip_predictor=True).last_hidden_state
        else:
            hidden = theirs(pixel_values=video).last_hidden_state
    assert_close(values["pooled"], hidden.mean(dim=1), atol=1e-4)  # (the tolerance of tests/models' HF checks)


@pytest.mark.slow
def test_two_ranks_write_their_shards_and_rank_0_one_index(trained_run, demo_root, demo_shards, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # windows: each rank opens its share of the videos to count them, and both plan from all counts
    common = [str(trained_run), str(demo_root / "val"), str(demo_shards / "val" / "manifest.json"), "--workers", "0",
              "--rows-per-shard", "3", "--features", "pooled,probe", "--no-progress", "--window-seconds", "0.5",
              "--stride-seconds", "0.25"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.embed"]
    done = subprocess.run([*torchrun, *common, "--output", str(tmp_path / "two")], env=env, timeout=time_left(),
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--output", str(tmp_path / "one")]) == 0
    one, two = features_of(tmp_path / "one"), features_of(tmp_path / "two")
    samples = json.loads((demo_shards / "val" / "manifest.json").read_text())["total_clips"]
    windows = [row for row in one[0] if row["window"]]
    assert one[0] == two[0] and len(one[0]) == len(windows) + samples and len(windows) >= 2 * 8
    for name in ("pooled", "probe"):
        assert np.abs(one[1][name] - two[1][name]).max() <= 1e-5
    assert (tmp_path / "two" / "index.csv").read_text() == (tmp_path / "one" / "index.csv").read_text()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_units(tmp_path):
    """The whole command on 1000 and 4000 units of random clips (decoding and the encoder stubbed:
    bench/bench_embed_memory.py): 24 KB of features per unit go to disk, so 4x the units write 4x
    the bytes (more than the memory a run takes) and the peak resident memory stays where it was."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_embed_memory import measure

    # loaders of 512 units (the command's: 16384), so that the larger run goes through 8 of them
    small, large = (measure(n, tmp_path / str(n), 1024, time_left(), loader_units=512) for n in (1000, 4000))
    assert small["code"] == large["code"] == 0
    assert large["feature_bytes"] == 4 * small["feature_bytes"] > 2 * large["grown_bytes"]
    assert large["grown_bytes"] < 1.3 * small["grown_bytes"], (small, large)


@pytest.mark.slow
def test_a_killed_run_continues_where_it_stopped(trained_run, demo_root, tmp_path):
    """A real SIGKILL in the middle of the work: the shards finished before it are not written
    again, the rest are, and the folder equals an uninterrupted run's."""
    import time

    videos = sorted(str(p) for p in (demo_root / "train").glob("*.mp4"))
    listing = tmp_path / "many.csv"
    listing.write_text("".join(f"{videos[i % len(videos)]} 0\n" for i in range(480)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "harness.embed", str(trained_run), str(listing), "--output", str(out),
                "--rows-per-shard", "8", "--workers", "0", "--no-progress", "--features", "pooled,probe"]  # fmt: skip

    out = tmp_path / "killed"
    process = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + time_left() / 3
    while not (out / "parts" / "000001.json").exists():  # two shards finished
        assert process.poll() is None, f"it ended before it could be killed: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert not (out / "index.csv").exists(), "killed before the end"
    finished = sorted(p.stem for p in (out / "parts").glob("*.json"))
    assert 2 <= len(finished) < 60
    before = {job: stat(out / f"shard-{job}.safetensors") for job in finished}
    again = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=time_left())
    assert again.returncode == 0, again.stderr[-3000:]
    assert "embedded 480 videos, 0 unreadable, in 60 shards" in again.stdout
    assert {job: stat(out / f"shard-{job}.safetensors") for job in finished} == before, "finished shards kept"
    whole = subprocess.run(command(tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, timeout=time_left())
    assert whole.returncode == 0  # (as a process of its own: the same threads, the same sums, bit for bit)
    killed, whole = features_of(out), features_of(tmp_path / "whole")
    assert killed[0] == whole[0]
    for name in ("pooled", "probe"):
        assert np.array_equal(killed[1][name], whole[1][name])
