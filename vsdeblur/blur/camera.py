"""Motion blur as a camera records it: a continuous camera path integrated over each exposure.

A sensor adds up light while the shutter is open, so a blurred frame is the mean, in linear
light, of the sharp views along the camera's path during its exposure; its sharp reference is
the view at mid-exposure. The path continues between frames, so neighbouring frames are blurred
alike and are displaced by what the camera moved in between:

- translation: a drift whose speed sets the blur length of each exposure and changes slowly from
  frame to frame, plus handheld wobble (a smooth random velocity with a quarter-frame
  correlation time) that bends the path within an exposure, and rare jerks;
- roll and zoom: small rates, which blur the frame's edges more than its centre;
- the shutter is open for a random share of the frame interval (1/2 is the 180-degree rule).

Views are resampled with bicubic interpolation, on the device of the image (a GPU renders its
own training batches). Poses are (dx, dy, roll, log zoom): the view's pixel p (relative to the
view's centre) shows the scene at centre + (dx, dy) + R(roll) p / zoom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vsdeblur.blur.synth import GAMMA

SAMPLES_PER_FRAME = 64  # resolution of the path's numerical integration
MAX_SUBSTEP_SHIFT = 0.5  # pixels a view may move between two averaged sub-frame views


@dataclass(frozen=True)
class CameraSpec:
    """The distribution camera paths are drawn from (lengths in pixels at the view's centre)."""

    min_length: float = 1.0  # blur length of one exposure, drift only
    max_length: float = 24.0
    log_lengths: bool = True  # every octave of blur length equally likely: mild blur is common
    wobble: float = 1.0  # handheld wobble's speed relative to the drift's, at most
    max_roll: float = 0.3  # degrees per exposure, at most
    max_zoom: float = 0.01  # relative scale change per exposure, at most
    min_shutter: float = 0.5  # share of the frame interval the shutter is open
    max_shutter: float = 1.0
    jerk_probability: float = 0.05  # per frame: a sudden change of the drift


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, spacing: float, dims: int) -> np.ndarray:
    """A smooth random function of time (Catmull-Rom through normal knots every `spacing`
    frames), sampled at `times`: len(times) x dims, unit standard deviation at the knots."""
    start = math.floor(times.min() / spacing) - 1
    knots = rng.normal(size=(math.ceil(times.max() / spacing) - start + 3, dims))
    u = times / spacing - start
    i = np.clip(np.floor(u).astype(int), 1, len(knots) - 3)
    f = (u - i)[:, None]
    p0, p1, p2, p3 = knots[i - 1], knots[i], knots[i + 1], knots[i + 2]
    return 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2 + (3 * p1 - p0 - 3 * p2 + p3) * f**3)


@dataclass(frozen=True)
class CameraPath:
    """One drawn path: poses at any time (in frame intervals; frame t is exposed around t)."""

    times: np.ndarray  # the integration grid
    poses: np.ndarray  # len(times) x 4: dx, dy, roll (radians), log zoom
    shutter: float
    length: float  # the drift's blur length per exposure, pixels

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(t, self.times, self.poses[:, k]) for k in range(4)], axis=1)

    def exposure(self, frame: int, radius: float) -> np.ndarray:
        """The poses averaged into frame `frame`: enough sub-frame samples over its exposure that
        no point within `radius` pixels of the view's centre moves more than half a pixel
        between two of them."""
        fine = self.at(frame + np.linspace(-0.5, 0.5, 65) * self.shutter)
        steps = np.diff(fine, axis=0)
        shift = np.hypot(steps[:, 0], steps[:, 1]) + radius * (np.abs(steps[:, 2]) + np.abs(steps[:, 3]))
        count = int(np.clip(math.ceil(shift.sum() / MAX_SUBSTEP_SHIFT), 1, 96))
        return self.at(frame + ((np.arange(count) + 0.5) / count - 0.5) * self.shutter)


def draw_path(rng: np.random.Generator, spec: CameraSpec, frames: int) -> CameraPath:
    """A camera path over frames 0 .. frames-1, centred so that frame 0's mid-exposure pose is
    the identity."""
    shutter = rng.uniform(spec.min_shutter, spec.max_shutter)
    low, high = max(spec.min_length, 0.05), max(spec.max_length, spec.min_length, 0.05)
    length = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if spec.log_lengths else rng.uniform(low, high)
    times = np.arange(-1 * SAMPLES_PER_FRAME, (frames + 1) * SAMPLES_PER_FRAME + 1) / SAMPLES_PER_FRAME
    speed = length / shutter  # pixels per frame interval
    heading = rng.uniform(0, 2 * np.pi)
    drift = np.array([np.cos(heading), np.sin(heading)]) * speed
    # the drift turns and changes speed slowly from frame to frame, and sometimes jerks
    drift = drift * (1 + 0.15 * _smooth_noise(rng, times, 2.0, 2))
    for jerk in np.flatnonzero(rng.random(frames + 2) < spec.jerk_probability):
        drift = drift + (times[:, None] >= jerk - 1) * rng.normal(scale=0.5 * speed, size=2)
    wobble = rng.uniform(0, spec.wobble) * speed * _smooth_noise(rng, times, 0.25, 2)
    velocity = drift + wobble
    roll_rate = np.radians(rng.uniform(-spec.max_roll, spec.max_roll)) / shutter
    zoom_rate = rng.uniform(-spec.max_zoom, spec.max_zoom) / shutter
    rates = np.stack([velocity[:, 0], velocity[:, 1],
                      roll_rate * (1 + 0.3 * _smooth_noise(rng, times, 1.0, 1)[:, 0]),
                      np.full(len(times), zoom_rate)], axis=1)
    dt = 1 / SAMPLES_PER_FRAME
    poses = np.concatenate([np.zeros((1, 4)), np.cumsum((rates[1:] + rates[:-1]) / 2 * dt, axis=0)])
    path = CameraPath(times, poses, shutter, length)
    return CameraPath(times, poses - path.at(np.zeros(1)), shutter, length)


def reach(path: CameraPath, frames: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The scene area a clip of `frames` views of `size` (h, w) draws on, as the lowest and
    highest (x, y) offsets from the scene point that frame 0's view is centred on."""
    h, w = size
    corners = np.array([[-w, -h], [w, -h], [-w, h], [w, h]], np.float64) / 2
    times = np.arange(frames)[:, None] + np.linspace(-0.5, 0.5, 9)[None] * path.shutter
    poses = path.at(times.ravel())
    points = scene_points(poses, corners)
    return points.min(axis=(0, 1)), points.max(axis=(0, 1))


def _affine(poses: np.ndarray) -> np.ndarray:
    """Each pose as the affine map from view offsets (x, y, 1) to scene offsets from the path's
    origin: len(poses) x 3 x 2, for row vectors."""
    roll, scale = poses[:, 2], np.exp(-poses[:, 3])
    cos, sin = scale * np.cos(roll), scale * np.sin(roll)
    affine = np.zeros((len(poses), 3, 2))
    affine[:, 0] = np.stack([cos, sin], axis=1)
    affine[:, 1] = np.stack([-sin, cos], axis=1)
    affine[:, 2] = poses[:, :2]
    return affine


def scene_points(poses: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Scene positions (relative to the path's origin) of view offsets under each pose:
    len(poses) x len(offsets) x 2."""
    return np.concatenate([offsets, np.ones((len(offsets), 1))], axis=1)[None] @ _affine(poses)


def views(scene: torch.Tensor, poses: np.ndarray, centre: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """Render views of `size` (h, w) from a C x H x W scene: one per pose, the path's origin at
    scene pixel `centre` (x, y). Returns len(poses) x C x h x w; outside the scene reflects."""
    h, w = size
    H, W = scene.shape[-2:]
    # each pose's map, moved to the scene's centre pixel and scaled to grid_sample's coordinates
    # (-1 .. 1 across the scene): one matrix product gives every view's sampling grid
    affine = _affine(poses)
    affine[:, 2] += centre
    affine = affine * (2 / np.array([W, H])) + np.array([0, 0, 1])[:, None] * (1 / np.array([W, H]) - 1)
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    offsets = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, h * w, 3).to(scene.device, torch.float32)
    grid = offsets @ torch.from_numpy(affine).to(scene.device, torch.float32)
    # the views stacked as one tall image of one scene: a batch of expanded scenes is copied
    # per view on the CPU, several times slower
    tall = F.grid_sample(scene[None], grid.reshape(1, len(poses) * h, w, 2), mode="bicubic", padding_mode="reflection", align_corners=False)
    return tall[0].unflatten(1, (len(poses), h)).transpose(0, 1)


def exposure_snap(path: CameraPath, frame: int) -> np.ndarray:
    """The pose shift (4,) that film() gives frame `frame`'s whole exposure: it moves the
    mid-exposure pose's translation onto whole pixels."""
    middle = path.at(np.array([float(frame)]))[0]
    snap = np.zeros(4)
    snap[:2] = np.round(middle[:2]) - middle[:2]
    return snap


def film(scene: torch.Tensor, path: CameraPath, frames: int, size: tuple[int, int], centre: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Film a still scene (C x H x W, code values in [0, 1]) along `path`: (blurred, sharp),
    each frames x C x h x w. Each blurred frame is the linear-light mean of its exposure's
    views; its sharp reference is the mid-exposure view."""
    centre = centre if centre is not None else ((scene.shape[-1] - 1) / 2, (scene.shape[-2] - 1) / 2)
    # on the pixel grid: a view whose pose has whole-pixel offsets copies scene pixels exactly
    centre = tuple(round(c - (n - 1) / 2) + (n - 1) / 2 for c, n in zip(centre, (size[1], size[0])))
    # only the part of the scene the views draw on (and bicubic's margin) is converted and read
    low, high = reach(path, frames, size)
    x0, y0 = (max(0, math.floor(centre[k] + low[k]) - 3) for k in (0, 1))
    x1, y1 = (math.ceil(centre[k] + high[k]) + 4 for k in (0, 1))
    scene, centre = scene[:, y0:y1, x0:x1], (centre[0] - x0, centre[1] - y0)
    linear = scene.clamp(0, 1).pow(GAMMA)
    radius = math.hypot(*size) / 2
    blurred, sharp = [], []
    for t in range(frames):
        # Each frame's exposure is moved by less than half a pixel so that its mid-exposure view
        # falls on whole pixels: the sharp reference is then the scene's own pixels, not a
        # resampled (softened) copy, and the frame-to-frame motion changes imperceptibly.
        middle = path.at(np.array([float(t)]))
        snap = exposure_snap(path, t)
        blurred.append(views(linear, path.exposure(t, radius) + snap, centre, size).clamp_min(0).mean(dim=0))
        sharp.append(views(linear, middle + snap, centre, size)[0].clamp_min(0))
    encode = lambda x: torch.stack(x).clamp(0, 1).pow(1 / GAMMA)  # noqa: E731
    return encode(blurred), encode(sharp)


def shake_frame(frame: torch.Tensor, path: CameraPath, index: int) -> torch.Tensor:
    """Blur one frame of a real clip (C x H x W in [0, 1]) by the camera's motion over its
    exposure, relative to its mid-exposure pose: the clip's own content stays where it is, and
    the camera path's continuity blurs neighbouring frames alike."""
    h, w = frame.shape[-2:]
    poses = path.exposure(index, math.hypot(h, w) / 2) - path.at(np.array([float(index)]))
    linear = frame.clamp(0, 1).pow(GAMMA)
    mean = views(linear, poses, ((w - 1) / 2, (h - 1) / 2), (h, w)).clamp_min(0).mean(dim=0)
    return mean.clamp(0, 1).pow(1 / GAMMA)
