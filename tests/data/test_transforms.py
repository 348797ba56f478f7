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


@pytest.mark.parametrize("options", [{}, {"motion_shift": True}, {"reprob": 1.0, "auto_augment": True}])
def test_train_transform_gives_height_by_width(options):
    torch.manual_seed(0)
    transform = TrainTransform(crop_size=[32, 48], **options)
    out = transform(static_clip())
    assert out.shape == (3, 8, 32, 48)
    portrait = TrainTransform(crop_size=(48, 32), **options)(static_clip())
    assert portrait.shape == (3, 8, 48, 32)


def test_train_boxes_take_the_output_shape_at_ratio_one():
    # random_resize_aspect_ratio is relative to the output's w/h: [1, 1] cuts boxes of its shape
    torch.manual_seed(0)
    frames = static_clip(height=120, width=160).permute(0, 3, 1, 2)
    for size, aspect in (((32, 64), 2.0), ((64, 32), 0.5), (32, 1.0)):
        transform = TrainTransform(size, random_resize_scale=(0.3, 0.3), random_resize_aspect_ratio=(1.0, 1.0))
        for _ in range(5):
            _, _, height, width = transform.sample_box(frames)
            assert width / height == pytest.approx(aspect, rel=0.05), (size, height, width)


def test_eval_transform_gives_height_by_width_views():
    frames = torch.randint(0, 256, (4, 48, 96, 3), dtype=torch.uint8)
    views = EvalTransform(crop_size=[32, 48], num_views=3)(frames)
    assert len(views) == 3 and all(v.shape == (3, 4, 32, 48) for v in views)
    assert not torch.equal(views[0], views[2])
    assert EvalTransform(crop_size=(48, 32))(frames)[0].shape == (3, 4, 48, 32)


def test_eval_boxes_of_a_rectangular_crop_cover_it_enlarged():
    # 240x320 frame, [224, 320] crop: the frame must cover [256, 366] (x 256/224); the width binds
    # (x 366/320), so the crop is 196 x 280 source pixels, centred (a square crop: the short side binds)
    cover = EvalTransform([224, 320]).cover
    assert cover == (256, 366)
    assert eval_boxes(240, 320, [224, 320], cover, 1) == [(22, 20, 196, 280)]
    # a portrait crop of a landscape frame: the height binds (x 366/240), and the crop fits the frame
    assert eval_boxes(240, 320, [320, 224], (366, 256), 1) == [(15, 86, 210, 147)]
    top, middle, bottom = eval_boxes(240, 320, [224, 320], cover, 3)  # views along the side with room: here the height
    assert [b[0] for b in (top, middle, bottom)] == [0, 22, 44] and {b[1] for b in (top, middle, bottom)} == {20}


@pytest.mark.parametrize("crop", [[32, 64], [64, 32], [48, 48]])
def test_decoding_smaller_never_cuts_a_box_below_the_crop(crop):
    from torchvision.transforms import RandomResizedCrop

    from harness.data.transforms import DecodeScale

    torch.manual_seed(0)
    height, width = crop
    train = TrainTransform(crop, random_resize_scale=(0.3, 1.0), random_resize_aspect_ratio=(0.75, 1.35))
    evaluation = EvalTransform(crop)
    for source in ((720, 1280), (1280, 720), (600, 600)):
        size = DecodeScale(train, "auto")(*source)
        assert size is not None and min(size) < min(source), "a large source is decoded smaller"
        frame = torch.empty(1, 3, *size)
        boxes = [RandomResizedCrop.get_params(frame, [0.3, 1.0], list(train.box_ratio)) for _ in range(2000)]
        assert min(box[2] for box in boxes) >= height - 2 and min(box[3] for box in boxes) >= width - 2, source
        size = DecodeScale(evaluation, "auto")(*source)
        (box,) = eval_boxes(*size, crop, evaluation.cover, 1)
        assert box[2] >= height and box[3] >= width, (source, size, box)
        assert min(size) <= evaluation.needed_short_side(*source) + 2, "no larger than the resize needs"
