"""The VapourSynth filter: `vsdeblur.atrous(clip, ...)`, which `core.deblur.Atrous` forwards to.

The graph it builds:

    clip -> working RGB -> stage 1 (its own node: padded stage-1 output, cut props)
                                    |  2r+1 copies of it, shifted by -r .. r frames
                                    v
           working RGB ----------> stage 2 (one window per frame) -> clip's format and props

Because every stage-2 window reads stage 1 through the core's frame cache (a fixed one, of
up to _STAGE1_CACHE_BYTES), stage 1 runs once per frame even when frames are requested out of
order; the engine caches the stage-2 encoder per frame for the last few windows. Both nodes are FrameEval around a fresh ModifyFrame per frame, so the core runs
several frames at once (a plain ModifyFrame calls its function for one frame at a time).
Padding, tiling, precision, ensemble and the window rule all stay in the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import vapoursynth as vs

from vsdeblur.config import ENGINE, VAPOURSYNTH, Option
from vsdeblur.engine.window import luma_thumbnail, scene_change, window_indices
from vsdeblur.errors import UsageError

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer

__all__ = ["atrous"]

_PROP_DIFF = "VsdeblurDiffNext"  # on stage-1 frames: the scene-cut rule's change to the next frame
_SCENE_PROPS = ("_SceneChangePrev", "_SceneChangeNext")
_graph_ids = itertools.count()
_STAGE1_CACHE_BYTES = 1 << 30  # stage-1 frames kept (RGBS: 12 bytes a pixel, 40 at 1080p; RGBH: 6)
_NAME = "deblur.Atrous"  # every error message starts with it, once (the C shim looks for it)


def atrous(
    clip: vs.VideoNode,
    weights: str | Path | None = ENGINE["weights"].default,
    preset: str | None = ENGINE["preset"].default,
    stage: int | None = ENGINE["stage"].default,
    radius: int | None = ENGINE["radius"].default,
    device: str = ENGINE["device"].default,
    precision: str = ENGINE["precision"].default,
    tile: int | None = ENGINE["tile"].default,
    overlap: int | None = ENGINE["overlap"].default,
    ensemble: bool = ENGINE["ensemble"].default,
    scene_threshold: float = ENGINE["scene_threshold"].default,
    compile: bool = ENGINE["compile"].default,
    backend: str = ENGINE["backend"].default,
    num_streams: int = VAPOURSYNTH["num_streams"].default,
    scene_props: bool = VAPOURSYNTH["scene_props"].default,
    matrix: int | None = VAPOURSYNTH["matrix"].default,
    color_range: str | None = VAPOURSYNTH["color_range"].default,
) -> vs.VideoNode:
    """Deblur a clip; the result has the clip's format, length and frame props.

    RGBS and RGBH are processed as they are, RGB24 and RGB48 too; other formats (YUV of any
    subsampling and depth, GRAY, other RGB depths) are converted to RGBS and back, using the
    clip's _Matrix and _Range (or older _ColorRange) props, or `matrix` / `color_range` where
    they are missing.
    Scene cuts: stage-2 windows stop at _SceneChangePrev/_SceneChangeNext; where a frame has
    neither prop, the engine's rule (vsdeblur.engine.window: a mean luma change above
    `scene_threshold`) marks cuts, as in every other door (0 disables).
    The other options are the engine's (see vsdeblur.config). Errors raise vs.Error.
    """
    values = dict(locals())
    del values["clip"]
    try:
        return _atrous(clip, _checked(values))
    except UsageError as exc:
        raise _error(exc) from None


def _error(exc: UsageError, frame: int | None = None) -> vs.Error:
    """A usage error as the one line a script author sees, the filter's name in front once."""
    message = str(exc).removeprefix(f"{_NAME}: ")
    return vs.Error(f"{_NAME}: {message}" if frame is None else f"{_NAME}: frame {frame}: {message}")


def _checked(values: dict) -> dict:
    """Every option through its schema check; VapourSynth passes booleans as 0/1."""
    options: dict[str, Option] = {o.name: o for o in ENGINE.options + VAPOURSYNTH.options}
    checked = {}
    for name, value in values.items():
        option = options[name]
        if option.type is bool and type(value) is int and value in (0, 1):
            value = bool(value)
        checked[name] = option.parse(value, _NAME)
    return checked


def _atrous(clip: vs.VideoNode, options: dict) -> vs.VideoNode:
    if not isinstance(clip, vs.VideoNode):
        raise UsageError(f"clip must be a video clip, not {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE or clip.width == 0 or clip.height == 0:
        raise UsageError("clips whose format or size changes from frame to frame are not supported")
    work, back = _working_rgb(clip, options["matrix"], options["color_range"])
    return back(graph(work, _engine({k: options[k] for k in ENGINE.defaults()}), options))


def graph(work: vs.VideoNode, engine: Deblurrer, options: dict) -> vs.VideoNode:
    """The deblurring graph over a clip already in the engine's formats (RGBS, RGBH, RGB24,
    RGB48); `options` holds the VAPOURSYNTH group and scene_threshold. Separate from atrous
    so that `vsdeblur bench --vapoursynth` can time it with the engine it compares against."""
    slots = _Slots(engine, options["num_streams"])
    graph_id = next(_graph_ids)  # keys the engine's encoder cache: graphs may share an engine
    like = np.empty((work.height, work.width, 3), _dtype(work.format))  # the output's shape and dtype

    def interleaved(frame: vs.VideoFrame) -> np.ndarray:
        return np.stack([np.asarray(frame[p]) for p in range(3)], axis=-1)

    def planes(frame: vs.VideoFrame) -> list[np.ndarray]:
        return [np.asarray(frame[p]) for p in range(3)]  # views, no copies

    def write(frame: vs.VideoFrame, planar: np.ndarray) -> vs.VideoFrame:
        """A copy of `frame` holding a 3 x H x W array."""
        out = frame.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), planar[p])
        return out

    if engine.stage == 1:
        # no window: one node, and stage 1 is the whole engine (image == frames for one frame)
        def restore(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
            with slots():
                return write(f, engine.image(interleaved(f)).transpose(2, 0, 1))

        return _parallel(work, [work], restore)

    height, width = engine.padded_size(work.height, work.width)
    # stage 1 travels between the nodes in the dtype the engine hands it over in
    padded_format = vs.RGBH if engine.padded_dtype(like.dtype) == np.float16 else vs.RGBS
    blank = work.std.BlankClip(width=width, height=height, format=padded_format, keep=True)
    sources = [blank, work]
    threshold = options["scene_threshold"]
    if threshold:
        sources.append(_shift(work, 1))

    def stage1(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        with slots():
            out = write(f[0], engine.stage1_padded(planes(f[1])))
        for key in _SCENE_PROPS:
            if key in f[1].props:
                out.props[key] = f[1].props[key]
        if threshold:
            thumbnails = [luma_thumbnail(planes(frame)) for frame in f[1:3]]
            out.props[_PROP_DIFF] = scene_change(*thumbnails)
        return out

    s1 = _parallel(blank, sources, stage1)
    # A fixed cache, so that stage 1 runs once per frame even when frames are requested far
    # out of order (the core's adaptive cache may drop a frame between two windows' reads).
    cached = max(4 * (2 * engine.radius + 1), min(work.num_frames, _STAGE1_CACHE_BYTES // (3 * engine.padded_dtype(like.dtype).itemsize * width * height)))
    vs.core.std.SetVideoCache(s1, mode=1, fixedsize=1, maxsize=cached, maxhistory=cached)
    r, last = engine.radius, work.num_frames - 1
    shifted = [_shift(s1, k) for k in range(-r, r + 1)]

    def cut_between(a: vs.FrameProps, b: vs.FrameProps) -> bool:
        """Is there a scene cut between consecutive frames with props a and b?"""
        if options["scene_props"] and ("_SceneChangeNext" in a or "_SceneChangePrev" in b):
            return bool(a.get("_SceneChangeNext", 0) or b.get("_SceneChangePrev", 0))
        return bool(threshold) and a[_PROP_DIFF] > threshold

    def stage2(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        # f[1 + r + k] is stage 1 of frame n + k, clamped to the clip: find n's scene inside
        # the window, then let the engine's rule pick the frames
        frames = {min(max(n + k, 0), last): f[1 + r + k] for k in range(-r, r + 1)}
        start = n
        while start > max(n - r, 0) and not cut_between(frames[start - 1].props, frames[start].props):
            start -= 1
        end = n
        while end < min(n + r, last) and not cut_between(frames[end].props, frames[end + 1].props):
            end += 1
        indices = window_indices(n, r, start, end)
        window = [planes(frames[i]) for i in indices]
        keys = [(graph_id, i) for i in indices]
        with slots():
            result = engine.stage2_padded(window, keys, like, planar=True)
        return write(f[0], result)

    return _parallel(work, [work, *shifted], stage2)


def _engine(settings: dict) -> Deblurrer:
    """The engine, with a clear error for missing default weights and nothing on stdout
    (vspipe writes the video there)."""
    from vsdeblur.engine import Deblurrer  # torch loads with the first filter, not the plugin
    from vsdeblur.weights import DEFAULT_WEIGHTS_NAME, default_weights_path

    if settings["weights"] is None and default_weights_path() is None:
        expected = resources.files("vsdeblur.weights").joinpath(DEFAULT_WEIGHTS_NAME)
        raise UsageError(f"no weights: the default weights file {expected} does not exist in this build; pass weights=PATH")
    with contextlib.redirect_stdout(sys.stderr):
        return Deblurrer(**settings)


class _Slots:
    """At most `count` frames inside the networks at once; on CUDA each slot owns a stream,
    so that one frame's copies overlap another's compute."""

    def __init__(self, engine: Deblurrer, count: int) -> None:
        import torch

        self._torch = torch
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(torch.cuda.Stream(engine.device) if engine.device.type == "cuda" else None)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        stream = self._free.get()  # blocks without the GIL until a slot is free
        try:
            with self._torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                yield
        finally:
            self._free.put(stream)


def _parallel(template: vs.VideoNode, clips: list[vs.VideoNode], fn: Callable) -> vs.VideoNode:
    """ModifyFrame(template, clips, fn), run for several frames at once: FrameEval makes a
    fresh ModifyFrame per frame, and clip_src tells the core which clips it reads. A usage
    error from fn (a network output that is not finite) becomes a vs.Error naming the frame."""

    def run(n: int, f: vs.VideoFrame | list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            return fn(n, f)
        except UsageError as exc:
            raise _error(exc, n) from None

    return template.std.FrameEval(lambda n: template.std.ModifyFrame(clips, run), clip_src=clips)


def _shift(clip: vs.VideoNode, k: int) -> vs.VideoNode:
    """Frame n of the result is frame n + k of `clip`, clamped to its ends."""
    count = clip.num_frames
    if k > 0:
        return clip.std.DuplicateFrames([count - 1] * k)[k:]
    if k < 0:
        return clip.std.DuplicateFrames([0] * -k)[:count]
    return clip


def _dtype(fmt: vs.VideoFormat) -> np.dtype:
    if fmt.sample_type == vs.FLOAT:
        return np.dtype(np.float16 if fmt.bits_per_sample == 16 else np.float32)
    return np.dtype(np.uint8 if fmt.bits_per_sample == 8 else np.uint16)


def _frame_range(props: vs.FrameProps) -> str | None:
    """The range a frame's props state: _Range (API 4.2+: 1 full, 0 limited) or, from older
    sources, _ColorRange (0 full, 1 limited), which R81 still reads but deprecates."""
    if "_Range" in props:
        return "full" if int(props["_Range"]) == 1 else "limited"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if "_ColorRange" in props:
            return "full" if int(props["_ColorRange"]) == 0 else "limited"
    return None


def _working_rgb(clip: vs.VideoNode, matrix: int | None, color_range: str | None) -> tuple[vs.VideoNode, Callable[[vs.VideoNode], vs.VideoNode]]:
    """The clip in a format the engine takes, and the way back to the clip's format (with all
    of the clip's frame props restored)."""
    fmt = clip.format
    family, floating, bits = fmt.color_family, fmt.sample_type == vs.FLOAT, fmt.bits_per_sample
    if family == vs.RGB and (bits in (16, 32) if floating else bits in (8, 16)):
        return clip, lambda out: out  # RGBH, RGBS, RGB24, RGB48: the engine's own dtypes

    def restore_props(out: vs.VideoNode) -> vs.VideoNode:
        return out.std.CopyFrameProps(clip)

    if family == vs.RGB:  # other integer depths (e.g. RGB30)
        return clip.resize.Point(format=vs.RGBS), lambda out: restore_props(out.resize.Point(format=fmt.id))
    if family not in (vs.YUV, vs.GRAY):
        raise UsageError(f"unsupported format {fmt.name}; use RGB, YUV or GRAY")

    props = clip.get_frame(0).props
    range_in: dict[str, str] = {}  # integer YUV/GRAY only: float formats are always full range
    range_out: dict[str, str] = {}
    if not floating:
        name = _frame_range(props) or color_range
        if name is None:
            raise UsageError(
                f"{fmt.name} input needs its colour range: the clip has no _Range (or _ColorRange) frame "
                'prop; pass color_range="full" or "limited", or set the prop with std.SetFrameProps'
            )
        range_in = {"range_in_s": name}
        range_out = {"range_s": name}
    if family == vs.GRAY:
        gray = clip.resize.Point(format=vs.GRAYS, **range_in)
        rgb = vs.core.std.ShufflePlanes([gray] * 3, [0, 0, 0], vs.RGB)

        def back_gray(out: vs.VideoNode) -> vs.VideoNode:
            planes = [out.std.ShufflePlanes(p, vs.GRAY) for p in range(3)]
            mean = vs.core.std.Expr(planes, "x y + z + 3 /", format=vs.GRAYS)
            return restore_props(mean.resize.Point(format=fmt.id, **range_out))

        return rgb, back_gray

    value = matrix if int(props.get("_Matrix", 2)) == 2 else int(props["_Matrix"])
    if value is None or value == 2:
        raise UsageError(
            f"{fmt.name} input needs its matrix: the clip has no _Matrix frame prop (or it says "
            "unspecified); pass matrix=1 (BT.709), 5 or 6 (BT.601), 9 (BT.2020), or set the prop"
        )

    def back_yuv(out: vs.VideoNode) -> vs.VideoNode:
        return restore_props(out.resize.Bicubic(format=fmt.id, matrix=value, **range_out))

    # The resizer checks a matrix (and the _Transfer/_Primaries some need) only when a frame
    # is converted: convert frame 0 both ways now, so that a bad one fails here, not in vspipe.
    try:
        rgb = clip.resize.Bicubic(format=vs.RGBS, matrix_in=value, **range_in)
        back_yuv(rgb).get_frame(0)
    except vs.Error as exc:
        raise UsageError(f"{fmt.name} input with matrix {value} cannot be converted to RGB: {str(exc).strip()}") from None
    return rgb, back_yuv
