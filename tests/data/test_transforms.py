import numpy as np
import pytest
import torch

from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, Normalize, TrainTransform, eval_boxes


def static_clip(frames=8, height=60, width=80, seed=0):
    """The same random frame repeated: any per-frame difference in the output is a bug."""
    image = torch.randint(
        0, 256, (1, height, width, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )
    return image.expand(frames, -1, -1, -1).contiguous()


@pytest.mark.parametrize(
    "options",
    [{}, {"auto_augment": True}, {"reprob": 1.0}, {"auto_augment": True, "reprob": 0.5, "horizontal_flip": False}],
)
def test_train_transform_uses_one_crop_per_clip(options):
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=32, **options)
    for _ in range(5):
        out = transform(static_clip())
        assert out.shape == (3, 8, 32, 32) and out.dtype == torch.float32
        for t in range(1, 8):
            assert torch.equal(out[:, t], out[:, 0]), "every frame of a clip must get the same augmentation"


def test_motion_shift_moves_the_crop():
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=24, random_resize_scale=(0.2, 0.3), motion_shift=True, horizontal_flip=False)
    moved = sum(not torch.equal(transform(static_clip())[:, 0], transform(static_clip())[:, -1]) for _ in range(10))
    assert moved > 0
    out = transform(static_clip())
    assert out.shape == (3, 8, 24, 24)


def test_normalize_matches_float_reference():
    clip = static_clip(frames=2, height=6, width=5)
    out = Normalize()(clip.permute(0, 3, 1, 2))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    reference = (clip.permute(3, 0, 1, 2).float() / 255 - mean) / std
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_eval_transform_is_deterministic_with_distinct_views():
    frames = torch.randint(0, 256, (4, 48, 96, 3), dtype=torch.uint8)
    transform = EvalTransform(crop_size=32, num_views=3)
    first, second = transform(frames), transform(frames)
    assert len(first) == 3 and all(v.shape == (3, 4, 32, 32) for v in first)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[2])


def test_eval_boxes_follow_resize_then_centre_crop():
    # 240x320 frame, short side resized to 256 (x1.0667): a 224 crop is 210 source pixels.
    (box,) = eval_boxes(240, 320, 224, 256, 1)
    assert box == (15, 55, 210, 210)
    left, centre, right = eval_boxes(320, 240, 224, 256, 3)  # portrait: views along the height
    assert [b[0] for b in (left, centre, right)] == [0, 55, 110]
    assert {b[1] for b in (left, centre, right)} == {15}


def test_identity_crop_keeps_pixels():
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))
    out = EvalTransform(crop_size=32, short_side_ratio=1.0)(frames)[0]
    expected = Normalize()(frames.permute(0, 3, 1, 2))
    torch.testing.assert_close(out, expected)
