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
import inspect
import itertools
import queue
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import vapoursynth as vs

from vsdeblur.config import ENGINE, VAPOURSYNTH, EngineSettings
from vsdeblur.engine.window import luma_thumbnail, scene_change, scene_window, starts_scene
from vsdeblur.errors import UsageError

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer

__all__ = ["atrous"]

_PROP_DIFF = "VsdeblurDiffNext"  # on stage-1 frames: the scene-cut rule's change to the next frame
_SCENE_PROPS = ("_SceneChangePrev", "_SceneChangeNext")
_graph_ids = itertools.count()
_STAGE1_CACHE_BYTES = 1 << 30  # stage-1 frames kept (RGBS: 12 bytes a pixel, 40 at 1080p; RGBH: 6)
_NAME = "deblur.Atrous"  # every error message starts with it, once (the C shim looks for it)


def atrous(clip: vs.VideoNode, **options: Any) -> vs.VideoNode:
    """Deblur a clip; the result has the clip's format, length and frame props.

    The options are the engine's (ENGINE) and the filter's own (VAPOURSYNTH), as
    vsdeblur.config defines them; the signature lists them with their defaults.
    RGBS and RGBH are processed as they are, RGB24 and RGB48 too; other formats (YUV of any
    subsampling and depth, GRAY, other RGB depths) are converted to RGBS and back, using the
    clip's _Matrix and _Range (or older _ColorRange) props, or `matrix` / `color_range` where
    they are missing.
    Scene cuts: stage-2 windows stop at _SceneChangePrev/_SceneChangeNext; where a frame has
    neither prop, the engine's rule (vsdeblur.engine.window: a mean luma change above
    `scene_threshold`) marks cuts, as in every other door (0 disables). Errors raise vs.Error.
    """
    try:
        settings, filter_options = _checked(options)
        return _atrous(clip, settings, filter_options)
    except UsageError as exc:
        raise _error(exc) from None


atrous.__signature__ = inspect.Signature(
    [inspect.Parameter("clip", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=vs.VideoNode)]
    + [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in ENGINE.options + VAPOURSYNTH.options],
    return_annotation=vs.VideoNode,
)


def _error(exc: UsageError, frame: int | None = None) -> vs.Error:
    """A usage error as the one line a script author sees, the filter's name in front once."""
    message = str(exc).removeprefix(f"{_NAME}: ")
    return vs.Error(f"{_NAME}: {message}" if frame is None else f"{_NAME}: frame {frame}: {message}")


def _checked(options: dict[str, Any]) -> tuple[EngineSettings, dict[str, Any]]:
    """The engine's settings and the filter's own options, each value through its schema
    check; VapourSynth passes booleans as 0/1."""
    by_name = {o.name: o for o in ENGINE.options + VAPOURSYNTH.options}
    unknown = [name for name in options if name not in by_name]
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r}; known: {', '.join(by_name)}")
    checked = VAPOURSYNTH.defaults() | ENGINE.defaults()
    for name, value in options.items():
        option = by_name[name]
        if option.type is bool and type(value) is int and value in (0, 1):
            value = bool(value)
        checked[name] = option.parse(value, _NAME)
    return EngineSettings.of(checked), VAPOURSYNTH.pick(checked)


def _atrous(clip: vs.VideoNode, settings: EngineSettings, options: dict[str, Any]) -> vs.VideoNode:
    if not isinstance(clip, vs.VideoNode):
        raise UsageError(f"clip must be a video clip, not {type(clip).__name__}")
    if clip.format is None or clip.format.id == vs.NONE or clip.width == 0 or clip.height == 0:
        raise UsageError("clips whose format or size changes from frame to frame are not supported")
    from vsdeblur.engine.tiling import MIN_SIDE  # torch loads with the filter's first call anyway

    if clip.width < MIN_SIDE or clip.height < MIN_SIDE:  # known now: said here, not at the first frame
        raise UsageError(f"the clip is {clip.width}x{clip.height}; vsdeblur needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    work, back = _working_rgb(clip, options["matrix"], options["color_range"])
    return back(graph(work, _engine(settings), options["num_streams"], options["scene_props"]))


def graph(work: vs.VideoNode, engine: Deblurrer, num_streams: int, scene_props: bool = True) -> vs.VideoNode:
    """The deblurring graph over a clip already in the engine's formats (RGBS, RGBH, RGB24,
    RGB48). Separate from atrous so that `vsdeblur bench --vapoursynth` can time it with the
    engine it compares against."""
    slots = _Slots(engine, num_streams)
    like = np.empty((work.height, work.width, 3), _dtype(work.format))  # the output's shape and dtype
    cut = _CutRule(engine.scene_threshold, scene_props)
    if engine.stage == 1:
        return _stage1_graph(work, engine, slots, cut)
    s1 = _stage1_node(work, engine, slots, like.dtype, cut)
    return _stage2_node(work, s1, engine, slots, like, cut)


class _CutRule:
    """Whether a scene cut lies between two consecutive frames: the _SceneChangePrev and
    _SceneChangeNext props where the frames carry them (and `scene_props` allows), else the
    engine's rule on the change between them (0 threshold: no cuts)."""

    def __init__(self, threshold: float, scene_props: bool) -> None:
        self.threshold, self.scene_props = threshold, scene_props

    def __call__(self, a: vs.FrameProps, b: vs.FrameProps, change: Callable[[], float]) -> bool:
        if self.scene_props and ("_SceneChangeNext" in a or "_SceneChangePrev" in b):
            return bool(a.get("_SceneChangeNext", 0) or b.get("_SceneChangePrev", 0))
        return bool(self.threshold) and starts_scene(change(), self.threshold)

    def between(self, a: vs.VideoFrame, b: vs.VideoFrame) -> bool:
        """The rule on two source frames (the change measured on their pictures)."""
        return self(a.props, b.props, lambda: _change(a, b))


def _change(a: vs.VideoFrame, b: vs.VideoFrame) -> float:
    return scene_change(luma_thumbnail(_planes(a)), luma_thumbnail(_planes(b)))


def _neighbour_clips(work: vs.VideoNode, engine: Deblurrer) -> list[vs.VideoNode]:
    """The clips a frame's stage 1 reads beside it: its neighbours (clamped to the clip), for
    a model that reads the motion prior; none for one that does not."""
    return [_shift(work, -1), _shift(work, 1)] if engine.reads_prior else []


def _neighbours(n: int, last: int, frames: list[vs.VideoFrame], cut: _CutRule) -> tuple[list[np.ndarray] | None, list[np.ndarray] | None]:
    """Frame n's neighbours in its scene, as planes, from [previous, current, following] (the
    _neighbour_clips' frames around it): None at the clip's ends and across a cut."""
    previous, current, following = frames
    before = _planes(previous) if n > 0 and not cut.between(previous, current) else None
    after = _planes(following) if n < last and not cut.between(current, following) else None
    return before, after


def _interleaved(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)], axis=-1)


def _planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.asarray(frame[p]) for p in range(3)]  # views, no copies


def _written(frame: vs.VideoFrame, planar: np.ndarray) -> vs.VideoFrame:
    """A copy of `frame` holding a 3 x H x W array."""
    out = frame.copy()
    for p in range(3):
        np.copyto(np.asarray(out[p]), planar[p])
    return out


def _stage1_graph(work: vs.VideoNode, engine: Deblurrer, slots: _Slots, cut: _CutRule) -> vs.VideoNode:
    """Stage 1 alone: no window, one node, and stage 1 is the whole engine (one frame with its
    neighbours in its scene, which only a model that reads the motion prior looks at)."""
    neighbours = _neighbour_clips(work, engine)
    last = work.num_frames - 1

    def restore(n: int, f: vs.VideoFrame | list[vs.VideoFrame]) -> vs.VideoFrame:
        f = f if isinstance(f, list) else [f]  # ModifyFrame passes one clip's frame alone
        before, after = _neighbours(n, last, [f[1], f[0], f[2]], cut) if neighbours else (None, None)
        interleave = lambda planes: None if planes is None else np.stack(planes, axis=-1)  # noqa: E731
        with slots():
            return _written(f[0], engine.frame(_interleaved(f[0]), interleave(before), interleave(after)).transpose(2, 0, 1))

    return _parallel(work, [work, *neighbours], restore)


def _stage1_node(work: vs.VideoNode, engine: Deblurrer, slots: _Slots, dtype: np.dtype, cut: _CutRule) -> vs.VideoNode:
    """Stage 1 of each frame, padded to the engine's multiple, in the dtype the engine hands
    it over in, carrying the scene props and the scene-cut rule's change to the next frame;
    cached so that it runs once per frame however the stage-2 windows ask for it."""
    height, width = engine.padded_size(work.height, work.width)
    padded_format = vs.RGBH if engine.padded_dtype(dtype) == np.float16 else vs.RGBS
    blank = work.std.BlankClip(width=width, height=height, format=padded_format, keep=True)
    neighbours = _neighbour_clips(work, engine)
    sources = [blank, work, *(neighbours or ([_shift(work, 1)] if engine.scene_threshold else []))]
    last = work.num_frames - 1

    def stage1(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        current = f[1]
        following = f[3] if neighbours else f[2] if engine.scene_threshold else None
        before, after = _neighbours(n, last, [f[2], current, f[3]], cut) if neighbours else (None, None)
        with slots():
            out = _written(f[0], engine.stage1_padded(_planes(current), before, after))
        for key in _SCENE_PROPS:
            if key in current.props:
                out.props[key] = current.props[key]
        if engine.scene_threshold:
            out.props[_PROP_DIFF] = _change(current, following)
        return out

    s1 = _parallel(blank, sources, stage1)
    # A fixed cache, so that stage 1 runs once per frame even when frames are requested far
    # out of order (the core's adaptive cache may drop a frame between two windows' reads).
    frame_bytes = 3 * engine.padded_dtype(dtype).itemsize * width * height
    cached = max(4 * (2 * engine.radius + 1), min(work.num_frames, _STAGE1_CACHE_BYTES // frame_bytes))
    vs.core.std.SetVideoCache(s1, mode=1, fixedsize=1, maxsize=cached, maxhistory=cached)
    return s1

def _stage2_node(work: vs.VideoNode, s1: vs.VideoNode, engine: Deblurrer, slots: _Slots, like: np.ndarray,
                 cut: _CutRule) -> vs.VideoNode:
    """Stage 2 of each frame over its window of stage-1 frames, clamped to its scene."""
    graph_id = next(_graph_ids)  # keys the engine's encoder cache: graphs may share an engine
    r, last = engine.radius, work.num_frames - 1
    shifted = [_shift(s1, k) for k in range(-r, r + 1)]

    def cut_after(frames: dict[int, vs.VideoFrame], i: int) -> bool:
        a, b = frames[i].props, frames[i + 1].props
        return cut(a, b, lambda: a[_PROP_DIFF])

    def stage2(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        # f[1 + r + k] is stage 1 of frame n + k, clamped to the clip
        frames = {min(max(n + k, 0), last): f[1 + r + k] for k in range(-r, r + 1)}
        indices = scene_window(n, r, last, lambda i: cut_after(frames, i))
        window = [_planes(frames[i]) for i in indices]
        with slots():
            result = engine.stage2_padded(window, [(graph_id, i) for i in indices], like, planar=True)
        return _written(f[0], result)

    return _parallel(work, [work, *shifted], stage2)


def _engine(settings: EngineSettings) -> Deblurrer:
    """The engine, with a clear error for missing default weights and nothing on stdout
    (vspipe writes the video there)."""
    from vsdeblur.engine import Deblurrer  # torch loads with the first filter, not the plugin
    from vsdeblur.weights import DEFAULT_WEIGHTS_NAME, default_weights_path

    if settings.weights is None and default_weights_path() is None:
        expected = resources.files("vsdeblur.weights").joinpath(DEFAULT_WEIGHTS_NAME)
        raise UsageError(f"no weights: the default weights file {expected} does not exist in this build; pass weights=PATH")
    with contextlib.redirect_stdout(sys.stderr):
        return Deblurrer(settings)


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
