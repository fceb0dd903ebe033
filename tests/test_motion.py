"""Camera motion from the neighbours (vsdeblur.motion): known pans, rolls and zooms of a frame of
the bundled clip are recovered per tile; cuts, flat frames, noise, clip ends and moving objects
get the confidence they deserve, never NaN."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from vsdeblur.motion import combine, estimate, estimate_pair, prepare, still
from vsdeblur.motion.synthetic import Warp

PAN, ROLL, ZOOM = Warp(3.37, -1.62), Warp(roll=0.3), Warp(zoom=1.005)
MIXED = Warp(-1.3, 0.8, -0.2, 0.996)
CONFIDENT = 0.8


def inverse(warp: Warp) -> Warp:
    """The motion of the frame before, at a steady camera speed (to first order)."""
    return Warp(-warp.dx, -warp.dy, -warp.roll, 1 / warp.zoom)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def picture(sample_clip) -> torch.Tensor:
    """The clip's first frame's luma (720 x 1280, in [0, 1]): grass, trees, a smooth rabbit and
    some sky. Warps resample it at this size and halve it, so frames are 640 x 360."""
    with av.open(str(sample_clip)) as container:
        frame = next(container.decode(video=0))
    return torch.from_numpy(frame.to_ndarray(format="gray")).float() / 255


@pytest.fixture(scope="module")
def current(picture) -> torch.Tensor:
    return Warp().apply(picture)


@pytest.mark.parametrize("warp", [PAN, ROLL, ZOOM, MIXED, Warp(14.6, 9.3)], ids=str)
def test_pans_rolls_and_zooms_are_recovered_per_tile(picture, current, warp):
    pair = estimate_pair(current, warp.apply(picture))
    confident = pair.confidence >= CONFIDENT
    assert confident.float().mean() >= 0.8  # textured content: most tiles count
    error = (pair.displacement - warp.field(pair.centres, current.shape)).norm(dim=-1)[confident]
    # every confident tile, however the field turns or scales
    assert error.max() <= 0.1
    # the field varies across the frame as the warp's does (roll and zoom: by pixels at the edges)
    spread = float(warp.field(pair.centres, current.shape).reshape(-1, 2).std(dim=0).norm())
    assert float(pair.displacement.reshape(-1, 2).std(dim=0).norm()) == pytest.approx(spread, abs=0.05)


def test_both_neighbours_give_the_displacement_from_t_minus_1_to_t_plus_1(picture, current):
    before, after = inverse(MIXED), MIXED
    motion = estimate(before.apply(picture), current, after.apply(picture))
    assert motion.sides == 2 and not motion.one_sided
    true = after.field(motion.centres, current.shape) - before.field(motion.centres, current.shape)
    confident = motion.confidence >= CONFIDENT
    assert confident.float().mean() >= 0.8
    error = (motion.displacement - true).norm(dim=-1)[confident]
    assert error.quantile(0.95) <= 0.2 and error.max() <= 0.4  # two intervals: twice a pair's error
    # the blur chord of a half-open shutter is a quarter of it
    assert torch.equal(motion.chord(0.5), motion.displacement / 4)


def test_one_neighbour_is_doubled_to_the_span_and_flagged(picture, current):
    following = PAN.apply(picture)
    pair = estimate_pair(current, following)
    motion = estimate(None, current, following)
    assert motion.sides == 1 and motion.one_sided
    assert torch.allclose(motion.displacement, 2 * pair.displacement)
    assert torch.all(motion.confidence <= pair.confidence + 1e-6)
    # at the clip's end: the content moved from t-1 to t, opposite to where it goes into t-1
    previous = inverse(PAN).apply(picture)
    backwards = estimate(previous, current, None)
    assert backwards.sides == 1
    assert torch.allclose(backwards.displacement, -2 * estimate_pair(current, previous).displacement)
    assert torch.allclose(backwards.displacement, motion.displacement, atol=0.2)


def test_prepared_frames_give_what_luma_gives(picture, current):
    previous, following = inverse(MIXED).apply(picture), MIXED.apply(picture)
    frames = [prepare(f) for f in (previous, current, following)]
    for fast, plain in ((estimate(*frames), estimate(previous, current, following)),
                        (estimate(None, frames[1], following), estimate(None, current, following))):
        assert torch.equal(fast.displacement, plain.displacement) and torch.equal(fast.confidence, plain.confidence)
    assert torch.equal(still(frames[1]).centres, still(current).centres)
    with pytest.raises(ValueError, match="prepared at factor 2"):
        estimate_pair(frames[1], frames[2], factor=4)


def backwards(warp: Warp, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Where the content at `points` of the warped picture was before it, minus the points:
    the p with p + field(p) = q, by fixed-point steps (the field's gradient is far below one)."""
    source = points
    for _ in range(20):
        source = points - warp.field(source, size)
    return source - points


@pytest.mark.parametrize("warp", [PAN, MIXED, Warp(14.6, 9.3, 0.3, 1.01)], ids=str)
def test_a_reversed_pair_is_as_accurate_as_the_pair_measured_the_other_way(picture, current, warp):
    # frame t+1's content into t, from t's pair into t+1: on as many confident tiles as
    # measuring it directly, as accurate to 0.01 px at the median and the 95th percentile
    # (reversing costs a thousandth of a pixel on these fields; the two measurements' own
    # errors differ by a few hundredths), within the bound a measured pair meets at worst
    following = warp.apply(picture)
    reversed_pair, direct = estimate_pair(current, following).reversed(), estimate_pair(following, current)
    assert torch.equal(reversed_pair.centres, direct.centres)
    errors = []
    for pair in (reversed_pair, direct):
        confident = pair.confidence >= CONFIDENT
        assert confident.float().mean() >= 0.8
        errors.append((pair.displacement - backwards(warp, pair.centres, current.shape)).norm(dim=-1)[confident])
    for q in (0.5, 0.95):
        assert errors[0].quantile(q) <= errors[1].quantile(q) + 0.01
    assert errors[0].max() <= 0.2
    assert (reversed_pair.confidence - direct.confidence).abs().mean() <= 0.05


def test_a_video_measures_each_interval_once(picture, current):
    # t's motion from its pair with t+1 and t-1's pair with t, reversed: as estimate() finds it
    before, after = inverse(MIXED), MIXED
    frames = [prepare(warp.apply(picture)) for warp in (before, Warp(), after)]
    motion = combine(estimate_pair(frames[0], frames[1]).reversed(), estimate_pair(frames[1], frames[2]))
    direct = estimate(*frames)
    assert motion.sides == 2
    confident = (motion.confidence >= CONFIDENT) & (direct.confidence >= CONFIDENT)
    assert confident.float().mean() >= 0.8
    assert (motion.displacement - direct.displacement).norm(dim=-1)[confident].quantile(0.95) <= 0.1


def test_a_reversed_pair_knows_what_entered_the_frame(picture, current):
    # content moved 20 px left into t+1: t+1's tiles at its right edge hold content t did not
    following = Warp(-20.0, 0.0).apply(picture)
    reversed_pair = estimate_pair(current, following).reversed()
    assert (reversed_pair.displacement[..., 0] > 19).float().mean() >= 0.8
    assert reversed_pair.match[:, -1].max() < reversed_pair.match[:, 1:-2].min()


def test_a_frame_without_neighbours_has_zero_motion_and_zero_confidence(current):
    motion = estimate(None, current, None)
    assert motion.sides == 0 and not motion.one_sided
    assert not motion.displacement.any() and not motion.confidence.any()
    assert motion.centres.shape == estimate(current, current, current).centres.shape
    assert torch.equal(still(current).centres, motion.centres)


def test_tiles_sit_on_a_grid_centred_on_the_frame(current):
    centres = still(current).centres  # 640 x 360: working frame 320 x 180, tiles of 32 at steps of 16
    assert centres.shape == (10, 19, 2)
    assert torch.allclose(centres.reshape(-1, 2).mean(dim=0), torch.tensor([319.5, 179.5]))
    assert torch.allclose(centres[0, 1:, 0] - centres[0, :-1, 0], torch.tensor(32.0))
    assert torch.allclose(centres[1:, 0, 1] - centres[:-1, 0, 1], torch.tensor(32.0))
    assert float(centres[0, 0, 0]) == 31.5  # the first tile covers working pixels 0..31: full 0..63


def test_a_cut_gives_zero_confidence_and_leaves_the_other_side(picture, current):
    unrelated = current.flip(0)  # the same kind of texture, nowhere the same picture
    alone = estimate(None, current, unrelated)
    assert alone.sides == 0 and not alone.confidence.any() and torch.isfinite(alone.displacement).all()
    following = PAN.apply(picture)
    motion = estimate(unrelated, current, following)
    assert motion.sides == 1
    assert torch.allclose(motion.displacement, estimate(None, current, following).displacement)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_flat_frames_give_zero_confidence(value):
    flat = torch.full((360, 640), value)
    motion = estimate(flat, flat, flat)
    assert not motion.confidence.any()
    assert torch.isfinite(motion.displacement).all()


def test_noise_gives_low_confidence():
    rng = torch.Generator().manual_seed(0)
    noise = [torch.rand(360, 640, generator=rng) for _ in range(3)]
    assert estimate(*noise).confidence.max() < 0.05
    assert estimate_pair(noise[1], noise[2]).confidence.max() < 0.05
    # a flat picture under sensor noise: texture of the noise's own, matching nothing
    grain = [0.5 + 0.02 * torch.randn(360, 640, generator=rng) for _ in range(3)]
    assert estimate(*grain).confidence.max() < 0.05


def test_a_moving_object_lowers_the_confidence_of_its_tile(picture, current):
    before, after = inverse(PAN), PAN
    frames = [before.apply(picture), current, after.apply(picture)]
    patch = torch.nn.functional.avg_pool2d(picture[100:164, 800:864][None, None], 2)[0, 0]  # grass, 32 x 32

    def with_object(frame: torch.Tensor, x: int) -> torch.Tensor:
        frame = frame.clone()
        frame[170:202, x : x + 32] = patch  # it moves 10 px a frame to the right, against the pan
        return frame

    calm = estimate(*frames)
    busy = estimate(*(with_object(f, x) for f, x in zip(frames, (300, 310, 320))))
    # the tile whose centre the object covers in frame t
    distance = (busy.centres - torch.tensor([310 + 15.5, 170 + 15.5])).norm(dim=-1)
    tile = np.unravel_index(int(distance.argmin()), distance.shape)
    assert calm.confidence[tile] >= CONFIDENT
    assert busy.confidence[tile] < 0.3
    # tiles two or more tiles away keep theirs
    far = distance > 64
    assert torch.allclose(busy.confidence[far], calm.confidence[far], atol=0.1)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 16), (9, 300), (40, 24)], ids=str)
def test_tiny_frames_are_finite(shape):
    rng = torch.Generator().manual_seed(1)
    frames = [torch.rand(shape, generator=rng) for _ in range(3)]
    reversed_pair = estimate_pair(frames[1], frames[2]).reversed()
    assert torch.isfinite(reversed_pair.displacement).all() and torch.isfinite(reversed_pair.confidence).all()
    for motion in (estimate(*frames), estimate(None, frames[1], frames[2]), estimate(None, frames[1], None)):
        assert torch.isfinite(motion.displacement).all() and torch.isfinite(motion.confidence).all()
        assert ((motion.confidence >= 0) & (motion.confidence <= 1)).all()


def test_zeros_nan_and_infinities_in_never_give_nan_out(current):
    broken = current.clone()
    broken[100:120, 200:260] = float("nan")
    broken[0, :] = float("inf")
    zeros = torch.zeros_like(current)
    for frames in ((zeros, zeros, zeros), (broken, current, broken), (current, broken, zeros)):
        motion = estimate(*frames)
        assert torch.isfinite(motion.displacement).all() and torch.isfinite(motion.confidence).all()


def test_numpy_frames_and_mismatched_sizes(current):
    frame = current.numpy().astype(np.float64)
    motion = estimate(frame, frame, frame)
    assert motion.displacement.dtype == torch.float32 and motion.displacement.abs().max() < 0.05
    with pytest.raises(ValueError, match="differ in size"):
        estimate(frame[:-2], frame, None)
    with pytest.raises(ValueError, match="one luma plane"):
        estimate(None, np.stack([frame] * 3, axis=-1), frame)
