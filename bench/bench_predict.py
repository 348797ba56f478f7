"""Prediction throughput: ``harness.predict``'s pipeline against evaluation's, and ONNX Runtime
against eager PyTorch, side by side in one run.

1. The same model on the same real mp4 files: clips/s of the evaluation loop
   (``VideoClipDataset`` + ``evaluate``) and of the predict loop (``VideoUnits`` + ``predict_units``),
   alternated ``--repeats`` times, medians compared (aim: predict >= 0.95 x evaluation).
2. The model's forward on one batch: eager PyTorch (fp32, no grad) against the ``onnx`` export run
   by ONNX Runtime's CPU provider, alternated, medians compared.

    python bench/bench_predict.py [--model vit_small] [--videos 32] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from harness.config import load_config
from harness.data import VideoClipDataset, build_loader
from harness.data.listing import read_listing
from harness.data.synthetic import make_demo_dataset
from harness.export.formats import export_onnx
from harness.export.model_io import Preprocessing, build_plain_model
from harness.parallel.precision import Precision
from harness.parallel.strategy import Strategy
from harness.predict.cli import Unit, VideoUnits, collate_units, predict_units
from harness.training.evaluation import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import median_step_seconds  # noqa: E402


def evaluation_seconds(model, records, preprocessing: Preprocessing, batch: int, workers: int) -> float:
    dataset = VideoClipDataset([(records, preprocessing.clip_spec())], preprocessing.transform(), train=False,
                               num_clips=preprocessing.num_clips, random_clip_sampling=False)  # fmt: skip
    loader = build_loader(dataset, batch, train=False, num_workers=workers, persistent_workers=False)
    strategy = Strategy(torch.device("cpu"), Precision("float32", torch.device("cpu")))
    started = time.perf_counter()
    evaluate(model, loader, strategy, len(preprocessing.class_names), num_views=preprocessing.num_views)
    return time.perf_counter() - started


def predict_seconds(model, records, preprocessing: Preprocessing, batch: int, workers: int) -> float:
    units = [Unit((i,), record.path) for i, record in enumerate(records)]
    loader = DataLoader(VideoUnits(units, preprocessing, "auto"), batch_size=batch, num_workers=workers,
                        collate_fn=collate_units)  # fmt: skip
    started = time.perf_counter()
    predict_units(model, loader, preprocessing, torch.device("cpu"), torch.float32, 5, False)
    return time.perf_counter() - started


def demo_videos_and_model(root: Path, args: argparse.Namespace) -> tuple[list, torch.nn.Module, Preprocessing]:
    """``args.videos`` demo mp4 files of 320x180 (48 frames) in ``root``, and a 4-class classifier
    ``args.model`` taking ``args.frames`` x ``args.size`` clips (every 2nd frame), with its preprocessing."""
    make_demo_dataset(root, 4, args.videos // 4, 1, num_frames=48, size=(180, 320), progress=False)
    config = load_config(None, [f"model.model_name={args.model}", f"data.crop_size={args.size}",
                                f"data.dataset_fpcs=[{args.frames}]", f"data.val_dataset_fpcs=[{args.frames}]",
                                "data.frame_step=2"])  # fmt: skip
    model = build_plain_model(config, 4).eval()
    return read_listing(root / "train.csv"), model, Preprocessing.from_config(config, ["right", "left", "down", "up"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_small")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records, model, preprocessing = demo_videos_and_model(root, args)
        clips = len(records) * preprocessing.num_clips * preprocessing.num_views
        evaluation_seconds(model, records[:8], preprocessing, args.batch, args.workers)  # warm-up: first
        predict_seconds(model, records[:8], preprocessing, args.batch, args.workers)  # forwards, page cache
        times = {"evaluation": [], "predict": []}
        for _ in range(args.repeats):  # alternated, so that load on a shared machine hits both alike
            times["evaluation"].append(evaluation_seconds(model, records, preprocessing, args.batch, args.workers))
            times["predict"].append(predict_seconds(model, records, preprocessing, args.batch, args.workers))
        rates = {name: clips / statistics.median(values) for name, values in times.items()}
        print(f"{args.model} {args.frames}x{args.size}, {len(records)} videos of 320x180, batch {args.batch}, "
              f"{args.workers} workers, median of {args.repeats}")  # fmt: skip
        for name, rate in rates.items():
            print(f"  {name:11s} {rate:7.2f} clips/s")
        print(f"  predict / evaluation = {rates['predict'] / rates['evaluation']:.3f}")

        import onnxruntime

        export_onnx(model, preprocessing, {}, root)
        options = onnxruntime.SessionOptions()
        session = onnxruntime.InferenceSession(str(root / "model.onnx"), options, providers=["CPUExecutionProvider"])
        batch = torch.randn(args.batch, 1, 3, args.frames, args.size, args.size)
        with torch.no_grad():
            eager = median_step_seconds(lambda: model(batch), args.repeats * 2)
        runtime = median_step_seconds(lambda: session.run(None, {"clips": batch.numpy()}), args.repeats * 2)
        print(f"forward of {args.batch} clips: eager PyTorch {1e3 * eager:.0f} ms, ONNX Runtime CPU "
              f"{1e3 * runtime:.0f} ms; ONNX Runtime / eager speed = {eager / runtime:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
