"""``python -m harness.predict --explain DIR``: where the attentive probe looked, per prediction.

For each video (or window) the probe's cross-attention weights (:mod:`harness.models.attention_maps`)
are drawn over the frames the model saw (after the evaluation resize and crop) into ``DIR``: a PNG
strip (a row of frames per clip and view), and on request an animated GIF or MP4
(:mod:`harness.data.overlays`); each row of the predictions gets the attention mass per time step
and the source frames each step covers.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import torch

from harness.core.errors import UserError
from harness.data.overlays import animation_frames, overlay_video, write_animation, write_strip
from harness.data.transforms import denormalize_clips
from harness.models.attention_maps import AttentionMaps, probe_attention

#: the rate of the GIF and MP4 files (frames per second): the sampled frames, slowed down to be seen
ANIMATION_FPS = 4.0


def check_explainable(model: torch.nn.Module, source: str) -> None:
    """A :class:`UserError` when ``model`` has no attention probe to show (a linear head)."""
    if probe_attention(model) is None:
        raise UserError(f"--explain: {source} classifies with a linear head (mean of the tokens), which has no "
                        "attention to show; only attentive-probe models (model.classifier=attentive) "
                        "can explain")  # fmt: skip


def file_stems(videos: list[str]) -> list[str]:
    """The name of each input video's files: its file name without suffix, followed by its
    position in the inputs when several inputs share it."""
    stems = [safe_name(Path(video).stem) for video in videos]
    counts = Counter(stems)
    return [stem if counts[stem] == 1 else f"{stem}_{index}" for index, stem in enumerate(stems)]


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of other characters than letters, digits, ``.`` and ``-`` become ``_``."""
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "video"


class Explainer:
    """Writes the pictures of each predicted unit into ``folder`` and puts the attention curve
    on its row.

    Args:
        folder: where the files go (made if missing).
        formats: of ``png``, ``gif``, ``mp4`` (:data:`harness.predict.cli.EXPLAIN_FORMATS`).
        videos: the input videos in order (unit ``order[0]`` indexes them; a shard sample's is
            past their end, and its name is the shard's and the sample key's).
    """

    def __init__(self, folder: Path, formats: tuple[str, ...], videos: list[str]) -> None:
        self.folder, self.formats, self.stems = Path(folder), formats, file_stems(videos)
        self.folder.mkdir(parents=True, exist_ok=True)

    def name(self, order: tuple, video: str, window: str) -> str:
        """``stem`` (a video), ``stem_w3`` (its window 3), ``folder_shard_key`` (a shard sample)."""
        if order[0] < len(self.stems):
            return self.stems[order[0]] + (f"_w{window}" if window else "")
        url, _, key = video.partition("#")  # the shard's folder too: train/ and val/ both hold shard-000000.tar
        shard = Path(url)
        return f"{safe_name(shard.parent.name)}_{safe_name(shard.name.split('.')[0])}_{safe_name(key)}"

    def explain(self, rows: list, clips: torch.Tensor, clip_indices: torch.Tensor, maps: AttentionMaps) -> None:
        """For each row (a unit's prediction) and its video in the batch: the curve onto the row,
        the pictures into the folder. ``clips``: the batch as decoded, ``[B, clips x views, C, T,
        H, W]`` (``uint8``, or normalised)."""
        curves, spans = maps.over_time().numpy(), maps.frame_spans(clip_indices).numpy()
        seen = denormalize_clips(clips)  # [B, clips x views, 3, T, H, W]
        for index, row in enumerate(rows):
            row.attention = [round(float(value), 6) for value in curves[index]]
            row.attention_frames = [(int(first), int(last)) for first, last in spans[index]]
            overlaid = overlay_video(seen[index].numpy(), maps.weights[index].numpy())
            stem = self.folder / self.name(row.order, row.video, row.window)
            if "png" in self.formats:
                write_strip(stem.with_name(stem.name + ".png"), overlaid)
            for suffix in ("gif", "mp4"):
                if suffix in self.formats:
                    write_animation(stem.with_name(f"{stem.name}.{suffix}"), animation_frames(overlaid), ANIMATION_FPS)
