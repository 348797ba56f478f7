"""harness.predict --explain: the probe's attention recorded without changing the logits, folded onto
the token grids, drawn, written with the predictions, and on the demo's squares where they are."""

import csv
import json
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.files import load_clips
from harness.data.synthetic import demo_videos
from harness.data.transforms import EvalTransform, normalize_clips
from harness.export.model_io import load_classifier
from harness.models import AttentiveClassifier, LinearClassifier, MultiHeadClassifier, VideoClassifier
from harness.models.attention_maps import fold_attention, forward_with_attention, recording_attention
from harness.models.vit import VisionTransformer
from harness.predict.cli import main
from tests.conftest import SQUARES

NAMES = ["right", "left", "down", "up"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def small_model(aggregation="average_logits", out_layers=None, depth=1, heads=1, **options):
    torch.manual_seed(0)
    encoder = VisionTransformer(32, 4, patch_size=8, embed_dim=48, depth=2, num_heads=3, use_rope=True,
                                out_layers=out_layers)  # fmt: skip
    probes = [AttentiveClassifier(48, 4, num_heads=3, depth=depth, **options) for _ in range(heads)]
    classifier = probes[0] if heads == 1 else MultiHeadClassifier(probes)
    return VideoClassifier(encoder, classifier, clip_aggregation=aggregation, temporal_pos_embed=True).eval()


@pytest.mark.parametrize(
    "aggregation, out_layers, depth",
    [("average_logits", None, 1), ("concat_tokens", None, 1), ("concat_tokens", [0, 1], 2),
     ("average_logits", [0, 1], 2)],
)  # fmt: skip
def test_recording_leaves_the_logits_bit_identical_and_folds_each_view_to_one(aggregation, out_layers, depth):
    model = small_model(aggregation, out_layers, depth)
    clips = torch.randn(2, 4, 3, 4, 32, 32)  # 2 videos, 2 clips x 2 views
    indices = torch.arange(4).repeat(2, 4, 1) + torch.tensor([0, 0, 6, 6])[None, :, None]
    with torch.no_grad():
        plain = model(clips, indices, 2)
        logits, maps = forward_with_attention(model, clips, indices, 2)
        again = model(clips, indices, 2)
    assert torch.equal(logits, plain) and torch.equal(again, plain), "recording changes nothing, and is undone after"
    assert maps.weights.shape == (2, 2, 2, 2, 4, 4) and (maps.tubelet_size, maps.patch_size) == (2, 8)
    assert torch.allclose(maps.weights.sum(dim=(1, 3, 4, 5)), torch.ones(2, 2)), "each view's maps sum to 1"
    assert torch.allclose(maps.over_time().sum(dim=1), torch.ones(2)) and maps.over_time().shape == (2, 4)
    assert maps.frame_spans(indices)[0].tolist() == [[0, 1], [2, 3], [6, 7], [8, 9]]


def test_the_recorded_weights_are_the_softmax_the_probe_pooled_with():
    # one head, one query: the cross-attention's output is exactly the weights times the values
    model = small_model()
    model.classifier = AttentiveClassifier(48, 4, num_heads=1, use_sdpa=True).eval()
    xattn = model.classifier.pooler.cross_attention_block.xattn
    seen = {}
    xattn.register_forward_hook(lambda module, inputs, output: seen.update(tokens=inputs[1], output=output))
    with torch.no_grad(), recording_attention(model) as recorder:
        model(torch.randn(3, 1, 3, 4, 32, 32))
        values = xattn.kv(seen["tokens"]).chunk(2, dim=-1)[1]
    pooled = (recorder.weights[0][:, None, :] @ values)[:, 0]
    assert torch.allclose(pooled, seen["output"][:, 0], atol=1e-5)


def test_fold_puts_each_token_on_its_clip_step_and_patch():
    encoder = SimpleNamespace(patch_size=16, tubelet_size=2)
    shape = (1, 6, 3, 4, 32, 48)  # 3 clips x 2 views of 4 frames at 32 x 48: grids (2, 2, 3), 12 tokens
    token = 1 * 12 + 5  # clip 1 (of the view's joined sequence), step 0, row 1, column 2
    for aggregation, rows, width in (("concat_tokens", 2, 36), ("average_logits", 6, 12)):
        model = SimpleNamespace(encoder=encoder, clip_aggregation=aggregation)
        weights = torch.zeros(rows, width)
        weights[:, token % width] = 1
        maps = fold_attention(model, weights, shape, num_views=2)
        assert maps.weights.shape == (1, 3, 2, 2, 2, 3)
        hot = maps.weights.nonzero().tolist()
        if aggregation == "concat_tokens":  # the clips of a view joined along time: one softmax
            assert hot == [[0, 1, 0, 0, 1, 2], [0, 1, 1, 0, 1, 2]]
        else:  # each clip its own softmax, divided by the clips
            assert hot == [[0, c, v, 0, 1, 2] for c in range(3) for v in range(2)]
            assert maps.weights.max() == pytest.approx(1 / 3)
    levels = torch.zeros(6, 24)  # out_layers joined along the token axis: two levels, summed
    levels[:, 5], levels[:, 12 + 5] = 0.25, 0.75
    maps = fold_attention(SimpleNamespace(encoder=encoder, clip_aggregation="average_logits"), levels, shape, 2)
    assert maps.weights[0, 0, 0, 0, 1, 2] == pytest.approx(1 / 3)


def test_a_multi_head_model_shows_the_head_asked_for():
    model = small_model(heads=2)
    clips = torch.randn(1, 1, 3, 4, 32, 32)
    with torch.no_grad():
        first = forward_with_attention(model, clips, head=0)[1].weights
        second = forward_with_attention(model, clips, head=1)[1].weights
        model.classifier = model.classifier.heads[1]
        alone = forward_with_attention(model, clips)[1].weights
    assert torch.equal(second, alone) and not torch.equal(first, second)


def test_a_linear_head_cannot_explain_in_one_line(trained_run, demo_root, tmp_path, monkeypatch, capsys):
    from harness.predict import predictor

    real = predictor.load_classifier

    def linear(source, weights):  # the run's encoder with VideoMAE's head: no attention probe
        model, preprocessing = real(source, weights)
        model.classifier = LinearClassifier(model.encoder.feature_dim, 4)
        return model, preprocessing

    monkeypatch.setattr(predictor, "load_classifier", linear)
    code = main([str(trained_run), str(demo_root / "val"), "--explain", str(tmp_path / "x"), "--workers", "0"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and "linear head" in error and "no attention" in error
    assert not (tmp_path / "x").exists(), "refused before any work"
    with pytest.raises(ValueError, match="no attention probe"), recording_attention(linear(str(trained_run), "ema")[0]):
        pass


def test_explain_options_are_checked_first(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv, message in (
        (["--explain-format", "gif"], "--explain-format needs --explain"),
        (["--explain", str(tmp_path), "--explain-format", "png,avi"], "comma-separated list of png, gif, mp4"),
        (["--explain", str(tmp_path / "file")], "a file is there"),
    ):
        assert main(["model", "video.mp4", *argv]) == 2
        assert message in capsys.readouterr().err


def test_pictures_and_curves_of_each_video(trained_run, demo_root, tmp_path):
    # the run: clips of 4 frames (tubelet 2: 2 steps) at 32 px, 1 clip, 1 view
    out = tmp_path / "explained"
    videos = [str(demo_root / "val" / name) for name in ("right_000.mp4", "up_001.mp4")]
    args = [str(trained_run), *videos, "--workers", "0", "--no-progress", "--explain", str(out)]
    assert main([*args, "--explain-format", "png,gif,mp4", "--output", str(tmp_path / "p.csv")]) == 0
    expected = [f"{video}.{suffix}" for video in ("right_000", "up_001") for suffix in ("gif", "mp4", "png")]
    assert sorted(p.name for p in out.iterdir()) == expected
    with Image.open(out / "right_000.png") as strip:
        assert strip.size == (4 * 32, 32) and strip.mode == "RGB", "a row of the 4 frames the model saw"
    with Image.open(out / "right_000.gif") as gif:
        assert (gif.n_frames, gif.size) == (4, (32, 32))
    with av.open(str(out / "up_001.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (32, 32, 3)
    rows = read_csv(tmp_path / "p.csv")
    for row in rows:
        curve = [float(v) for v in row["attention_over_time"].split(";")]
        assert len(curve) == 2 and sum(curve) == pytest.approx(1, abs=1e-5)
        spans = [tuple(map(int, span.split("-"))) for span in row["attention_frames"].split(";")]
        assert len(spans) == 2 and spans[0][0] <= spans[0][1] < spans[1][0] <= spans[1][1]
    assert main([*args, "--output", str(tmp_path / "p.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["attention_over_time"] for r in records] == [[float(v) for v in row["attention_over_time"].split(";")]
                                                           for row in rows]  # fmt: skip
    assert all(len(r["attention_frames"]) == 2 and len(r["attention_frames"][0]) == 2 for r in records)
    assert main([*args[:-2], "--output", str(tmp_path / "plain.csv")]) == 0
    plain = read_csv(tmp_path / "plain.csv")
    assert "attention_over_time" not in plain[0], "without --explain the columns are as they were"
    assert [r["prob1"] for r in plain] == [r["prob1"] for r in rows], "explaining changes no prediction"


def test_windows_and_shard_samples_are_explained_by_name(trained_run, video_dir, demo_shards, tmp_path):
    out = tmp_path / "explained"
    video = video_dir / "long_30fps.mp4"  # 4 s: windows 0-3 of 1.5 s every second
    # two manifests whose shards share names (train/shard-000000.tar, val/shard-000000.tar)
    code = main([str(trained_run), str(video), str(demo_shards / "val" / "manifest.json"),
                 str(demo_shards / "train" / "manifest.json"), "--window-seconds", "1.5", "--stride-seconds", "1",
                 "--workers", "0", "--explain", str(out), "--output", str(tmp_path / "w.csv")])  # fmt: skip
    assert code == 0
    rows = read_csv(tmp_path / "w.csv")
    windows = [r for r in rows if r["video"] == str(video)]
    assert [r["window"] for r in windows] == ["0", "1", "2", "3", "all"] and windows[-1]["attention_over_time"] == ""
    starts = [int(r["attention_frames"].split("-")[0]) for r in windows[:-1]]
    assert starts == sorted(starts) and starts[-1] >= 60, "each window's own frames"
    names = {p.name for p in out.iterdir()}
    assert {f"long_30fps_w{n}.png" for n in range(4)} <= names
    samples = [r for r in rows if "#" in r["video"]]
    assert samples and all(r["attention_over_time"] for r in samples)
    assert len(names) == 4 + len(samples) and all(name.endswith(".png") for name in names), "one file per sample"
    assert {name.split("_")[0] for name in names if "shard" in name} == {"train", "val"}


# The demo's moving squares: does the trained probe look at the square? Measured against where the
# generator drew it (not against the model's own maps): the attention mass on the patches the square
# overlaps (in any frame of the step), over the share of the grid those patches are. An untrained
# probe attends evenly (ratio 1.00); configs/demo.yaml as shipped (96 training videos, 15 epochs)
# reaches 3.8 at 100% validation accuracy. This is the smallest setting found that still learns to
# look: half the videos (12 per class), the same 15 epochs: 4.0, 2.6, 3.5 with meta.seed 0, 1, 2
# (94%, 81%, 94% accuracy). Fewer epochs or a finer grid look less: 10 epochs 2.3 (44%); 32-pixel
# crops of 8-pixel patches 1.3 though at 94% accuracy (accuracy alone does not make the probe look).
def square_cells(mask: np.ndarray, frames: torch.Tensor, crop: EvalTransform, grid: tuple[int, int, int]) -> np.ndarray:
    """``bool [T', H', W']``: the patches the square overlaps in a frame of each step, as the model
    saw the clip (the same frames, the same resize and crop)."""
    seen = crop(torch.from_numpy(np.repeat(mask[frames.numpy(), ..., None], 3, axis=-1).astype(np.uint8) * 255))
    steps, rows, columns = grid
    seen = seen[0][0].numpy() > 127  # [T, S, S]
    return seen.reshape(steps, -1, rows, seen.shape[1] // rows, columns, seen.shape[2] // columns).any(axis=(1, 3, 5))


@pytest.mark.slow
def test_the_demo_probe_attends_to_the_moving_square(square_run):
    root, run = square_run
    model, preprocessing = load_classifier(run)
    assert (preprocessing.crop_size, model.encoder.patch_size, preprocessing.num_clips) == (64, 16, 1)
    ratios, correct = square_ratios(model, preprocessing, root)
    print(f"attention on the square / its area: mean {np.mean(ratios):.2f}, min {np.min(ratios):.2f} over "
          f"{len(ratios)} videos; accuracy {correct}/{len(ratios)}")  # fmt: skip
    assert np.mean(ratios) >= 2.0, "the probe looks at the square at least twice as much as at an even spread"
    # the same measure of a new probe on the trained encoder: an even spread (the measure is fair)
    pooler = model.classifier.pooler
    torch.manual_seed(0)
    model.classifier = AttentiveClassifier(pooler.query_tokens.shape[-1], 4,
                                           pooler.cross_attention_block.xattn.num_heads, norm_eps=1e-6)  # fmt: skip
    untrained, _ = square_ratios(model.eval(), preprocessing, root)
    print(f"a new probe: mean {np.mean(untrained):.3f}")
    assert abs(np.mean(untrained) - 1.0) < 0.1, f"an untrained probe: {np.mean(untrained):.3f}"


def square_ratios(model, preprocessing, root) -> tuple[list[float], int]:
    """Per validation video: the attention mass on the patches the square overlaps / their share
    of the grid (1: an even spread); and how many videos the model classified right."""
    crop = EvalTransform(preprocessing.crop_size, normalize=False)
    ratios, correct = [], 0
    for video in (v for v in demo_videos(**SQUARES) if v.split == "val"):
        clips, indices = load_clips(str(root / video.relative), preprocessing.clip_spec(), 1, preprocessing.transform(),
                                    random=False, allow_clip_overlap=False, rng=np.random.default_rng(0))  # fmt: skip
        batch = normalize_clips(torch.stack(clips)[None], preprocessing.mean, preprocessing.std)
        with torch.no_grad():
            logits, maps = forward_with_attention(model, batch, indices[None])
        correct += int(logits.argmax()) == video.directions[0]
        weights = maps.weights[0, 0, 0].numpy()  # [T', H', W']
        cells = square_cells(video.masks, indices[0], crop, weights.shape)
        if cells.any():  # (a square outside the centre crop in every frame is not counted)
            ratios.append(weights[cells].sum() / cells.mean())
    return ratios, correct
