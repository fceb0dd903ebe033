"""What the virtual camera (camera.py) did to the frames it filmed, as film() renders them: the
ground truth that measurements of the motion estimator (vsdeblur.motion) and of the
deconvolution prior (vsdeblur.prior) compare with.

Positions are offsets from the view's centre (x right, y down, pixels). Vectors are how the
content seen at a position moves in the view, the sign the motion estimator measures: a
straight chord's kernel is symmetric, so the prior takes either sign.
"""

from __future__ import annotations

import numpy as np

from vsdeblur.blur.camera import CameraPath, exposure_snap, scene_points


def rendered_pose(path: CameraPath, frame: int) -> np.ndarray:
    """Frame `frame`'s mid-exposure pose (4,) as film() renders its sharp view."""
    return path.at(np.array([float(frame)]))[0] + exposure_snap(path, frame)


def view_positions(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel coordinates (... x 2, x y of a frame of `size` h x w, pixel centres at integers)
    as offsets from the view's centre."""
    h, w = size
    return np.asarray(pixels, np.float64) - np.array([(w - 1) / 2, (h - 1) / 2])


def cell_centres(size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The centres of a grid (rows x cols) of equal cells over a frame of `size` (h x w), as the
    prior reads a field of chords: rows x cols x 2 offsets from the view's centre."""
    (h, w), (rows, cols) = size, grid
    x = (np.arange(cols) + 0.5) * w / cols - w / 2
    y = (np.arange(rows) + 0.5) * h / rows - h / 2
    return np.stack(np.meshgrid(x, y), axis=-1)


def exposure_chords(path: CameraPath, frame: int, positions: np.ndarray) -> np.ndarray:
    """Frame `frame`'s exposure chord at each position (... x 2): how far the content seen there
    at mid-exposure moves in the view from the start of the exposure (frame - shutter / 2) to
    its end. film() moves the whole exposure with its snapped middle, so the ends are moved too."""
    ends = path.at(frame + np.array([-0.5, 0.5]) * path.shutter) + exposure_snap(path, frame)
    return _moved(rendered_pose(path, frame), ends[0], ends[1], positions)


def displacements(path: CameraPath, frame: int, positions: np.ndarray) -> np.ndarray:
    """How far the content seen at each position (... x 2) of frame `frame`'s sharp view moves
    from frame - 1's sharp view to frame + 1's (the span vsdeblur.motion.estimate measures)."""
    return _moved(rendered_pose(path, frame), rendered_pose(path, frame - 1), rendered_pose(path, frame + 1), positions)


def _moved(seen: np.ndarray, start: np.ndarray, end: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Where the scene points that pose `seen` shows at `positions` appear under pose `end`
    minus where they appear under pose `start`: ... x 2."""
    positions = np.asarray(positions, np.float64)
    points = scene_points(seen[None], positions.reshape(-1, 2))[0]
    return (_view_offsets(end, points) - _view_offsets(start, points)).reshape(positions.shape)


def _view_offsets(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Where scene points (N x 2, from the path's origin) appear in the view of `pose`: the
    inverse of camera.scene_points, N x 2."""
    roll, zoom = pose[2], np.exp(pose[3])
    c, s = np.cos(roll), np.sin(roll)
    q = points - pose[:2]
    return zoom * np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], axis=1)
