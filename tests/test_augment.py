"""Weak and strong augmentations: shape, range, per-image randomness, masks moving with images."""
from __future__ import annotations

import pytest
import torch

from mtssl.training.augment import GEOMETRIC, STRONG_POOL, Augmenter, StrongAugmentation, WeakAugmentation

SIZE = 32


def blob_batch(n: int) -> torch.Tensor:
    """Binary images with an off-centre, asymmetric rectangle (so flips and shifts are visible)."""
    images = torch.zeros(n, 1, SIZE, SIZE)
    images[:, :, 6:20, 3:13] = 1.0
    images[:, :, 22:26, 5:9] = 1.0
    return images


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("kind", ["weak", "strong"])
def test_views_keep_shape_and_unit_range(kind):
    images = torch.rand(6, 1, SIZE, SIZE)
    masks = (torch.rand(6, 1, SIZE, SIZE) > 0.5).float()
    out, out_masks = Augmenter(SIZE, 2)(images, kind, masks)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    assert out.min() >= 0 and out.max() <= 1
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    alone, none = Augmenter(SIZE, 2)(images, kind)
    assert alone.shape == images.shape and none is None


def test_none_view_is_the_input_and_unknown_kind_is_refused():
    images = torch.rand(2, 1, SIZE, SIZE)
    out, masks = Augmenter(SIZE)(images, "none")
    assert out is images and masks is None
    with pytest.raises(ValueError, match="unknown view kind 'medium'"):
        Augmenter(SIZE)(images, "medium")


@pytest.mark.parametrize("kind", ["weak", "strong"])
def test_identical_images_get_different_random_parameters(kind):
    images = torch.rand(1, 1, SIZE, SIZE).expand(8, 1, SIZE, SIZE).contiguous()
    out, _ = Augmenter(SIZE, 2)(images, kind)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) >= 4  # one draw per batch would make all eight equal


def test_weak_view_moves_masks_exactly_with_images():
    images = blob_batch(16)
    out, out_masks = WeakAugmentation(SIZE)(images, images.clone())
    assert torch.equal(out, out_masks)  # flip and integer-shift crop: the image is its own mask afterwards
    moved = [not torch.equal(o, images[0]) for o in out]
    assert sum(moved) >= 12


def test_strong_hflip_flips_images_and_masks_alike():
    images = blob_batch(2) * 0.8 + 0.1
    masks = blob_batch(2)
    out, out_masks = StrongAugmentation(SIZE, n_ops=1, pool=("hflip",))(images, masks)
    assert torch.equal(out, images.flip(-1))
    assert torch.equal(out_masks, masks.flip(-1))


def test_strong_identity_pool_changes_nothing():
    images = torch.rand(3, 1, SIZE, SIZE)
    out, masks = StrongAugmentation(SIZE, n_ops=1, pool=("identity",))(images, None)
    assert torch.equal(out, images) and masks is None


def test_strong_geometric_ops_move_masks_with_images():
    """With a pool of geometric operations only, an image equal to its mask stays (nearly) equal to it.

    Images are resampled bilinearly and masks nearest-neighbour, so only the outline may differ.
    """
    pool = tuple(sorted(GEOMETRIC))
    images = blob_batch(24)
    out, out_masks = StrongAugmentation(SIZE, n_ops=2, pool=pool)(images, images.clone())
    agreement = ((out > 0.5).float() == out_masks).float().flatten(1).mean(1)
    assert agreement.min() >= 0.95
    # ...while the images really moved: against the untouched mask they disagree much more
    unmoved = ((out > 0.5).float() == images).float().flatten(1).mean(1)
    assert (unmoved < 0.95).sum() >= 12


def test_strong_ops_that_change_intensity_leave_masks_alone():
    pool = ("brightness", "contrast", "solarize", "posterize", "equalize", "autocontrast", "sharpness")
    images = torch.rand(4, 1, SIZE, SIZE)
    masks = blob_batch(4)
    out, out_masks = StrongAugmentation(SIZE, n_ops=3, pool=pool)(images, masks)
    assert torch.equal(out_masks, masks)
    assert not torch.equal(out, images)


@pytest.mark.parametrize("n_ops", [1, 2, 5])
def test_each_image_gets_n_ops_distinct_operations(n_ops):
    strong = StrongAugmentation(SIZE, n_ops=n_ops)
    chosen = strong.choose(400, torch.device("cpu"))
    assert chosen.shape == (400, len(STRONG_POOL)) and chosen.dtype == torch.bool
    assert (chosen.sum(1) == n_ops).all()  # a boolean row: n_ops distinct operations
    assert chosen.any(0).all()  # every operation gets picked by someone
    assert len({tuple(row.tolist()) for row in chosen}) > 10


def test_strong_pool_is_the_papers_and_n_ops_is_checked():
    assert len(STRONG_POOL) == 15 and GEOMETRIC <= set(STRONG_POOL)
    with pytest.raises(ValueError, match="n_ops must be 1..15"):
        StrongAugmentation(SIZE, n_ops=0)
    with pytest.raises(ValueError, match="unknown augmentation 'cutout'"):
        StrongAugmentation(SIZE, pool=("cutout", "hflip"))


@pytest.mark.parametrize("kind", ["weak", "strong"])
@pytest.mark.parametrize("channels, k", [(3, 1), (2, 4)])
def test_any_image_channels_and_target_channels(kind, channels, k):
    """Colour or multi-channel images with multi-channel label maps: shapes, ranges and labels survive."""
    images = torch.rand(8, channels, SIZE, SIZE)
    targets = (torch.rand(8, k, SIZE, SIZE) > 0.5).float()
    out, out_targets = Augmenter(SIZE, 2)(images, kind, targets)
    assert out.shape == images.shape and out_targets.shape == targets.shape
    assert out.min() >= 0 and out.max() <= 1
    assert set(out_targets.unique().tolist()) <= {0.0, 1.0}  # nearest: still labels


def test_geometric_ops_move_every_target_channel_like_the_image():
    """A target equal to the image (every channel) stays equal to it after geometric ops, bilinear or nearest."""
    base = blob_batch(12)
    images = torch.cat([base, base.flip(-1)], dim=1)  # two different channels
    pool = tuple(sorted(GEOMETRIC))
    torch.manual_seed(3)
    out, moved = StrongAugmentation(SIZE, n_ops=2, pool=pool)(images, images.clone(), "bilinear")
    assert torch.allclose(out, moved, atol=1e-6)  # continuous maps are resampled exactly like the image
    torch.manual_seed(3)
    out2, nearest = StrongAugmentation(SIZE, n_ops=2, pool=pool)(images, images.clone(), "nearest")
    assert torch.equal(out, out2)  # the resample mode of the targets does not change the images
    assert ((out > 0.5).float() == nearest).float().mean() >= 0.95


def test_bilinear_targets_keep_fractional_values():
    ramp = torch.linspace(0, 1, SIZE).view(1, 1, 1, SIZE).expand(6, 1, SIZE, SIZE).contiguous()
    _, out = StrongAugmentation(SIZE, n_ops=1, pool=("rotate",))(torch.rand(6, 1, SIZE, SIZE), ramp, "bilinear")
    assert len(out.unique()) > 2 * SIZE  # interpolated values, not only the ramp's own samples
    with pytest.raises(ValueError, match="resample must be one of nearest, bilinear"):
        Augmenter(SIZE)(ramp, "weak", ramp, "bicubic")


def test_strong_photometric_keeps_geometry():
    """The photometric strong view of an image keeps every pixel's place: its targets are untouched."""
    images = blob_batch(16) * 0.6 + 0.2
    targets = blob_batch(16)
    out, out_targets = Augmenter(SIZE, 2)(images, "strong_photometric", targets)
    assert torch.equal(out_targets, targets)
    strong = StrongAugmentation(SIZE, n_ops=2)
    chosen = strong.choose(500, photometric_only=True)
    geometric = [k for k, n in enumerate(strong.names) if n in GEOMETRIC]
    assert not chosen[:, geometric].any() and (chosen.sum(1) == 2).all()
    assert not torch.equal(out, images)


def test_each_operation_runs_only_on_the_rows_that_picked_it(monkeypatch):
    strong = StrongAugmentation(SIZE, n_ops=2)
    seen = {}
    for name, op in zip(strong.names, strong.ops):
        original = op.forward

        def spy(x, *rest, _name=name, _original=original):
            seen[_name] = seen.get(_name, 0) + x.shape[0]
            return _original(x, *rest)
        monkeypatch.setattr(op, "forward", spy)
    images = torch.rand(40, 1, SIZE, SIZE)
    torch.manual_seed(5)
    chosen = strong.choose(40)
    torch.manual_seed(5)
    strong(images)
    for k, name in enumerate(strong.names):
        if name != "identity":
            assert seen.get(name, 0) == int(chosen[:, k].sum())
    assert sum(seen.values()) < 40 * len(strong.names) / 3  # far fewer rows than every op on every row


def test_rows_that_picked_nothing_geometric_are_untouched_by_geometric_ops():
    """Per-row results: with an intensity-free, geometry-free pool every row is returned as it was."""
    images = torch.rand(10, 3, SIZE, SIZE)
    out, _ = StrongAugmentation(SIZE, n_ops=1, pool=("identity", "hflip"))(images)
    for before, after in zip(images, out):
        assert torch.equal(after, before) or torch.equal(after, before.flip(-1))
