"""``sampling_rule=vjepa2`` gives the frame indices of V-JEPA 2's own ``VideoDataset`` (run here from
the ``cc-vjepa2`` package, V-JEPA 2's ``src``) on real videos at broadcast frame rates."""

from fractions import Fraction

import numpy as np
import pytest
from vjepa2.datasets.video_dataset import VideoDataset

from harness.data.files import load_clips
from harness.data.sampling import ClipSpec
from harness.data.synthetic import moving_square_frames, write_video

RATES = {"23.976": Fraction(24000, 1001), "25": Fraction(25), "29.97": Fraction(30000, 1001), "30": Fraction(30)}
SAMPLINGS = [
    {"fps": 5},
    {"fps": 4},
    {"duration": 2.0},
    {"duration": 1.3},
    {"frame_step": 3},
]


@pytest.fixture(scope="module")
def rate_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("rates")
    rng = np.random.default_rng(0)
    paths = {}
    for name, rate in RATES.items():
        paths[name] = root / f"v_{name}.mp4"
        write_video(paths[name], moving_square_frames(1, 161, 48, 64, rng), fps=rate)
    return paths


def their_indices(path, tmp_path, fpc, num_clips, sampling):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{path} 0\n")
    options = {"frame_step": None, "fps": None, "duration": None, **sampling}
    dataset = VideoDataset([str(listing)], frames_per_clip=fpc, num_clips=num_clips, random_clip_sampling=False,
                           allow_clip_overlap=False, **options)  # fmt: skip
    _, indices = dataset.loadvideo_decord(str(path), fpc)
    return np.stack(indices)


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("fpc,num_clips", [(8, 1), (8, 3), (16, 2)])
def test_indices_equal_vjepa2_video_dataset(rate_videos, tmp_path, rate, sampling, fpc, num_clips):
    path = rate_videos[rate]
    expected = their_indices(path, tmp_path, fpc, num_clips, sampling)
    spec = ClipSpec(fpc, rule="vjepa2", **sampling)
    _, ours = load_clips(str(path), spec, num_clips, lambda clip: clip, random=False, allow_clip_overlap=False,
                         rng=np.random.default_rng(0))  # fmt: skip
    np.testing.assert_array_equal(ours.numpy(), expected)


def test_rules_differ_where_vjepa2_rounds_up():
    # 23.976 fps at fps=5: V-JEPA 2 takes ceil(23.976) // 5 = 4, the harness rule round(4.8) = 5.
    assert ClipSpec(8, fps=5, rule="vjepa2").step_for(24000 / 1001) == 4
    assert ClipSpec(8, fps=5).step_for(24000 / 1001) == 5
    # duration: int(2.0 * 24 / 8) = 6 for V-JEPA 2 (ceil of the rate first).
    assert ClipSpec(8, duration=2.0, rule="vjepa2").step_for(24000 / 1001) == 6
