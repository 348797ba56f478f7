import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.data.sampling import ClipSpec, ClipSpecError, sample_clip_indices


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "none of them"),
        ({"frame_step": 2, "fps": 5}, "frame_step, fps"),
        ({"fps": 5, "duration": 2.0}, "fps, duration"),
        ({"frame_step": 0}, "frame_step must be > 0"),
    ],
)
def test_clip_spec_conflicts_are_named(kwargs, match):
    with pytest.raises(ClipSpecError, match=match):
        ClipSpec(16, **kwargs)


def test_step_from_fps_and_duration():
    assert ClipSpec(16, frame_step=4).step_for(30) == 4
    assert ClipSpec(16, fps=10).step_for(30) == 3
    assert ClipSpec(16, fps=7.5).step_for(29.97) == 4
    assert ClipSpec(16, fps=60).step_for(30) == 1  # never below one frame
    assert ClipSpec(16, duration=2.0).step_for(24) == 3  # 2 s * 24 fps / 16 frames
    assert ClipSpec(8, duration=1.0).span(16) == 15


specs = st.builds(
    lambda fpc, step: ClipSpec(fpc, frame_step=step),
    st.integers(1, 24),
    st.integers(1, 8),
)


@settings(max_examples=400, deadline=None)
@given(
    num_frames=st.integers(1, 600),
    spec=specs,
    num_clips=st.integers(1, 5),
    random=st.booleans(),
    overlap=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_indices_properties(num_frames, spec, num_clips, random, overlap, seed):
    rng = np.random.default_rng(seed)
    idx = sample_clip_indices(num_frames, 30.0, spec, num_clips, random=random, allow_clip_overlap=overlap, rng=rng)
    assert idx.shape == (num_clips, spec.frames_per_clip)
    assert idx.min() >= 0 and idx.max() < num_frames
    steps = np.diff(idx, axis=1)
    assert (steps >= 0).all()
    # The full step until the clip runs out of frames, then the last frame repeated (padding).
    for clip in idx:
        short = np.flatnonzero(np.diff(clip) != spec.frame_step)
        if short.size:
            assert (clip[short[0] + 1 :] == clip[-1]).all(), "padding repeats the last frame only"
    span = (spec.frames_per_clip - 1) * spec.frame_step + 1
    if span <= num_frames // num_clips:
        assert (steps == spec.frame_step).all(), "a clip that fits its segment is never padded"
    if not overlap and num_clips > 1:
        assert (idx[1:, 0] > idx[:-1, -1]).all() or num_frames < num_clips, "clips stay in their segments"
    if overlap and span <= num_frames:
        assert (steps == spec.frame_step).all()


def test_centred_clips_are_deterministic_and_centred():
    spec = ClipSpec(4, frame_step=2)  # span 7
    idx = sample_clip_indices(100, 30, spec, num_clips=2)
    np.testing.assert_array_equal(idx, [[21, 23, 25, 27], [71, 73, 75, 77]])


def test_random_clips_cover_the_segment():
    spec = ClipSpec(4, frame_step=1)
    starts = {
        int(sample_clip_indices(20, 30, spec, 1, random=True, rng=np.random.default_rng(s))[0, 0]) for s in range(300)
    }
    assert starts == set(range(17))


def test_short_video_is_padded_with_last_frame():
    idx = sample_clip_indices(5, 30, ClipSpec(8, frame_step=1), 1)
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 4, 4, 4, 4])


def test_overlap_spreads_long_clips_over_the_video():
    idx = sample_clip_indices(30, 30, ClipSpec(10, frame_step=2), 3, allow_clip_overlap=True)
    np.testing.assert_array_equal(idx[:, 0], [0, 5, 11])  # span 19, starts spread over 0..11
    assert idx[-1, -1] == 29
