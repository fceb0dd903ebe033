"""The engine: one place for device, precision, padding, tiling, ensemble and the temporal
window. Every front-end (stream CLI, VapourSynth, batch, training evaluation) goes through it.

Data flow per frame: numpy frame -> tensor in [-1, 1] on the device -> reflect padding ->
stage 1 (tiled, ensembled) -> stage-2 encoder -> [window complete] -> stage-2 aggregation ->
crop -> clamp -> numpy frame of the input's dtype.

Precision: the networks compute in the compute precision (their folded convolutions cast what
they are given to their weights' type), but what carries the picture stays fp32: the input
frame, the global residual additions (an fp32 image plus an fp16/bf16 residual promotes to
fp32), the stage-1 output that stage 2 reads, and the tile blend. In bf16, values in [0.5, 1)
are about half an 8-bit code apart: an image held in it would lose 10- and 16-bit sources'
precision between the stages.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vsdeblur.config import ENGINE
from vsdeblur.engine.device import resolve_device, resolve_precision
from vsdeblur.engine.tiling import (
    DIHEDRAL,
    MIN_SIDE,
    Tile,
    auto_tile,
    blend,
    pad_to_multiple,
    plan_tiles,
    round_up,
    tile_geometry,
    transform,
    untransform,
)
from vsdeblur.engine.window import SceneDetector, window_indices
from vsdeblur.errors import UsageError
from vsdeblur.models import Preset, fold_scales
from vsdeblur.models.stage2 import Pyramid
from vsdeblur.weights import Weights, resolve_weights

__all__ = ["Deblurrer", "EngineStats", "check_frame"]

# numpy dtype -> the value of full white
SUPPORTED_DTYPES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float16): 1.0, np.dtype(np.float32): 1.0}
TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16, np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}
NUMPY_DTYPES = {t: n for n, t in TORCH_DTYPES.items()}

CutTest = Callable[[int, np.ndarray], bool]
NONFINITE_OUTPUT = (
    "the network's output holds NaN or infinite values: the weights do not work on this input "
    "(damaged, or a diverged training run), or the precision overflows (try precision fp32)"
)


@dataclass
class EngineStats:
    """How often each part of the network ran (frames, not tiles or ensemble members)."""

    stage1: int = 0
    encoder: int = 0
    stage2: int = 0


def check_frame(frame: object, index: int | None = None) -> np.ndarray:
    """Validate an H x W x 3 RGB frame; raise UsageError naming the problem."""
    where = f"frame {index}" if index is not None else "frame"
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"{where} must be a numpy array, not {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise UsageError(f"{where} must be H x W x 3 (RGB); got shape {frame.shape}")
    if frame.dtype not in SUPPORTED_DTYPES:
        raise UsageError(f"{where} has dtype {frame.dtype}; use uint8, uint16, float16 or float32")
    if frame.shape[0] < MIN_SIDE or frame.shape[1] < MIN_SIDE:
        raise UsageError(f"{where} is {frame.shape[1]}x{frame.shape[0]}; vsdeblur needs at least {MIN_SIDE}x{MIN_SIDE} pixels")
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        raise UsageError(f"{where} contains NaN or infinite values")
    return frame


class _HostFrame:
    """A frame on its way back to the host. On CUDA the copy runs asynchronously into pinned
    memory, so the next frame's compute overlaps it; `result()` waits for it."""

    def __init__(self, tensor: torch.Tensor, finite: torch.Tensor | None = None) -> None:
        self.event = None
        if tensor.device.type == "cuda":
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor.contiguous(), non_blocking=True)
            if finite is not None:  # travels with the frame: checking it on the device would wait
                finite = finite.to("cpu", non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
            tensor = host
        self.tensor, self.finite = tensor, finite

    def result(self) -> np.ndarray:
        """The frame as a numpy array that owns its memory: a caller may keep every frame of
        a clip, which must pin neither page-locked memory nor a tensor's storage."""
        if self.event is not None:
            self.event.synchronize()
        if self.finite is not None and not self.finite.item():
            raise UsageError(NONFINITE_OUTPUT)
        out = np.empty(self.tensor.shape, dtype=NUMPY_DTYPES[self.tensor.dtype])
        torch.from_numpy(out).copy_(self.tensor)
        return out


class _FrameState:
    """What the window keeps per frame: the padded stage-1 output and its encoder pyramids
    (one per tile and ensemble transform)."""

    __slots__ = ("stage1", "pyramids", "ready")

    def __init__(self, stage1: torch.Tensor, pyramids: list[list[Pyramid]] | None) -> None:
        self.stage1, self.pyramids = stage1, pyramids
        self.ready: torch.cuda.Event | None = None  # set when other CUDA streams may read it

    def tensors(self) -> Iterator[torch.Tensor]:
        yield self.stage1
        for per_tile in self.pyramids or []:
            for pyramid in per_tile:
                yield from pyramid


def chosen_stage(weights: Weights, stage: int | None) -> int:
    """The stage to run: the one asked for, else the highest the weights hold."""
    stage = max(weights.stages) if stage is None else stage
    if stage not in (1, 2):
        raise UsageError(f"stage must be 1 or 2, not {stage!r}")
    return stage


def window_radius(preset: Preset, stage: int, radius: int | None) -> int:
    """Frames on each side that a stage reads: stage 2 the radius its weights were trained
    with (asking for another is an error), stage 1 none."""
    if stage == 2 and radius is not None and radius != preset.stage2.radius:
        raise UsageError(
            f"the stage-2 weights were trained with radius {preset.stage2.radius}; "
            f"radius {radius} needs weights trained for it"
        )
    return preset.stage2.radius if stage == 2 else 0


class Deblurrer:
    """Deblur frames with a trained model.

    Args:
        preset: model preset name; default: the one recorded in the weights file (it must match).
        weights: a .safetensors weights file; default: the weights shipped with vsdeblur.
        stage: 1 (per-frame) or 2 (per-frame, then refined from neighbours); default: the
            highest stage the weights hold.
        radius: temporal radius of stage 2 (window of 2*radius+1 frames); fixed by the weights,
            default: theirs.
        device: "auto", "cpu", "cuda" or "cuda:N".
        precision: "auto" (fp16 on CUDA; bf16 on CPUs with AMX-BF16 or AVX512-BF16, else
            fp32), "fp32", "fp16" or "bf16".
        tile: tile side in pixels; None chooses from free memory, 0 never tiles.
        overlap: tile overlap in pixels; default: the preset's.
        ensemble: average the eight flips and rotations (8x slower, a little better).
        scene_threshold: detect scene cuts when consecutive frames differ by more than this
            (0..1); 0 or None detects none (cuts can still be passed to `frames`).
        compile: torch.compile the networks (CUDA; pays off on long clips).
    """

    def __init__(
        self,
        preset: str | None = ENGINE["preset"].default,
        weights: str | Path | None = ENGINE["weights"].default,
        stage: int | None = ENGINE["stage"].default,
        radius: int | None = ENGINE["radius"].default,
        device: str = ENGINE["device"].default,
        precision: str = ENGINE["precision"].default,
        tile: int | None = ENGINE["tile"].default,
        overlap: int | None = ENGINE["overlap"].default,
        ensemble: bool = ENGINE["ensemble"].default,
        scene_threshold: float | None = ENGINE["scene_threshold"].default,
        compile: bool = ENGINE["compile"].default,
    ) -> None:
        loaded = resolve_weights(weights)
        if preset is not None and preset != loaded.preset.name:
            raise UsageError(
                f"{loaded.path.name} was trained as preset {loaded.preset.name!r}, not {preset!r}; "
                "drop the preset option or pass matching weights"
            )
        models = {s: loaded.build(s) for s in range(1, chosen_stage(loaded, stage) + 1)}
        self.weights_path: Path | None = loaded.path
        self._setup(loaded.preset, models, radius, device, precision, tile, overlap, ensemble, scene_threshold, compile)

    @classmethod
    def from_models(cls, preset: Preset, models: dict[int, nn.Module], **options) -> Deblurrer:
        """An engine over modules in memory (training validation, benchmarks)."""
        self = cls.__new__(cls)
        self.weights_path = None
        settings = {k: v for k, v in ENGINE.defaults().items() if k not in ("weights", "preset", "stage")}
        settings.update(options)
        self._setup(preset, models, **settings)
        return self

    def _setup(
        self,
        preset: Preset,
        models: dict[int, nn.Module],
        radius: int | None,
        device: str,
        precision: str,
        tile: int | None,
        overlap: int | None,
        ensemble: bool,
        scene_threshold: float | None,
        compile: bool,
    ) -> None:
        self.preset = preset
        self.stage = max(models)
        self.radius = window_radius(preset, self.stage, radius)
        if tile is not None and tile < 0:
            raise UsageError(f"tile must be 0 (never tile) or a size in pixels, not {tile}")
        if overlap is not None and overlap < 0:
            raise UsageError(f"overlap must be at least 0, not {overlap}")
        if scene_threshold is not None and not 0 <= scene_threshold < 1:
            raise UsageError(f"scene threshold must lie between 0 and 1, not {scene_threshold}")
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        self.tile, self.overlap = tile, preset.overlap if overlap is None else overlap
        self.multiple = preset.multiple(self.stage)
        if tile:
            tile_geometry(tile, self.overlap, self.multiple)
        self.transforms = DIHEDRAL if ensemble else [(0, False)]
        self.scene_threshold = scene_threshold
        self.stats = EngineStats()
        # Eager CUDA convs with explicit reflect padding run faster in NCHW; compiled graphs
        # and the CPU's oneDNN kernels prefer channels_last (docs/performance.md).
        self.memory_format = torch.channels_last if compile or self.device.type == "cpu" else torch.contiguous_format
        self.models = {s: self._prepare_model(m) for s, m in models.items()}
        maybe_compiled = torch.compile if compile else lambda fn: fn
        self._stage1_net = maybe_compiled(self.models[1])
        stage2 = self.models.get(2)
        self._encode = maybe_compiled(stage2.encode) if stage2 is not None else None
        self._aggregate = maybe_compiled(stage2.aggregate) if stage2 is not None else None
        self._compiled = compile
        self._plans: dict[tuple[int, int], list[Tile]] = {}
        self._lru: OrderedDict[Hashable, _FrameState] = OrderedDict()
        # the thread-safe cache of stage2_padded; a Future lets concurrent callers that need
        # the same frame wait for one encoding instead of each running the encoder
        self._shared: OrderedDict[Hashable, Future[_FrameState]] = OrderedDict()
        self._shared_lock = threading.Lock()

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        model = fold_scales(copy.deepcopy(model)).eval().requires_grad_(False)
        return model.to(self.device, self.dtype, memory_format=self.memory_format)

    # ---- per-frame building blocks -------------------------------------------------------

    def _to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        """H x W x 3 numpy -> padded 1 x 3 x H' x W' tensor in [-1, 1] on the device."""
        host = torch.from_numpy(np.ascontiguousarray(frame))
        if self.device.type == "cuda":
            host = host.pin_memory()
        x = host.to(self.device, non_blocking=True).permute(2, 0, 1)[None].float()
        x = x * (2.0 / SUPPORTED_DTYPES[frame.dtype]) - 1.0
        return pad_to_multiple(x.contiguous(memory_format=self.memory_format), self.multiple)

    def _to_host(self, y: torch.Tensor, like: np.ndarray) -> _HostFrame:
        """Padded output tensor -> crop -> the input's dtype and range, copied to the host."""
        h, w = like.shape[:2]
        y = y[0, :, :h, :w]
        finite = torch.isfinite(y).all()  # NaN would otherwise be cast to black
        y = (y.float().clamp(-1, 1) + 1.0) * 0.5
        scale = SUPPORTED_DTYPES[like.dtype]
        if scale != 1.0:
            y = (y * scale).round_()
        y = y.to(TORCH_DTYPES[like.dtype])
        return _HostFrame(y.permute(1, 2, 0), finite)

    def _plan(self, x: torch.Tensor) -> list[Tile]:
        key = tuple(x.shape[-2:])
        if key not in self._plans:
            h, w = key
            tile = self.tile if self.tile is not None else auto_tile(self.device, self.preset, self.stage, self.dtype, h, w)
            self._plans[key] = plan_tiles(h, w, tile, self.overlap, self.multiple, self.device)
        return self._plans[key]

    def _ensembled(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        outputs = [untransform(fn(transform(x, k, m)), k, m) for k, m in self.transforms]
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)

    @torch.inference_mode()
    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        self.stats.stage1 += 1
        return blend(self._plan(x), lambda _, t: self._ensembled(self._stage1_net, x[..., t.ys, t.xs]), like=x).clamp_(-1, 1)

    @torch.inference_mode()
    def _encoded(self, s1: torch.Tensor) -> _FrameState:
        """A stage-1 output with its encoder pyramids, one per tile and ensemble transform."""
        self.stats.encoder += 1
        pyramids = [[self._encode(transform(s1[..., t.ys, t.xs], k, m)) for k, m in self.transforms] for t in self._plan(s1)]
        return _FrameState(s1, pyramids)

    def _frame_state(self, frame: np.ndarray) -> _FrameState:
        """Stage 1 and, for stage 2, the encoder: the once-per-frame work."""
        s1 = self._stage1(self._to_tensor(frame))
        return self._encoded(s1) if self.stage == 2 else _FrameState(s1, None)

    @torch.inference_mode()
    def _stage2(self, window: list[_FrameState]) -> torch.Tensor:
        """Aggregate a window of frame states (centre in the middle) into the centre's output."""
        self.stats.stage2 += 1
        centre = window[len(window) // 2].stage1

        def run(i: int, t: Tile) -> torch.Tensor:
            outputs = [
                untransform(
                    self._aggregate(self._distinct([s.pyramids[i][j] for s in window]), transform(centre[..., t.ys, t.xs], k, m)), k, m
                )
                for j, (k, m) in enumerate(self.transforms)
            ]
            return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)

        return blend(self._plan(centre), run, like=centre).clamp_(-1, 1)

    def _distinct(self, pyramids: list[Pyramid]) -> list[Pyramid]:
        """The window's pyramids with repeats copied, when the networks are compiled. At clip
        ends and scene cuts a window repeats its edge frame; Dynamo guards on which inputs
        are the same object, so each repeat pattern would compile another graph."""
        if not self._compiled:
            return pyramids
        seen: set[int] = set()
        distinct = []
        for pyramid in pyramids:
            distinct.append([t.clone() for t in pyramid] if id(pyramid) in seen else list(pyramid))
            seen.add(id(pyramid))
        return distinct

    # ---- public API -----------------------------------------------------------------------

    def frames(
        self,
        frames: Iterable[np.ndarray],
        cuts: Collection[int] | CutTest | None = None,
    ) -> Iterator[np.ndarray]:
        """Restore a sequence of H x W x 3 frames, yielding each in order, same shape and dtype.

        cuts: indices of frames that start a new scene, or a callable (index, frame) -> bool;
        combined with the engine's scene_threshold detector. No window crosses a cut.
        """
        return self._pipelined(self._restore(frames, self._cut_test(cuts)))

    def image(self, image: np.ndarray) -> np.ndarray:
        """Restore a single H x W x 3 image (stage 2 sees it as a one-frame clip)."""
        return next(self.frames([image]))

    def _cut_test(self, cuts: Collection[int] | CutTest | None) -> CutTest:
        tests: list[CutTest] = []
        if callable(cuts):
            tests.append(cuts)
        elif cuts is not None:
            starts = frozenset(int(c) for c in cuts)
            tests.append(lambda i, _: i in starts)
        if self.scene_threshold:
            detector = SceneDetector(self.scene_threshold)
            tests.append(lambda _, f: detector(f))
        # every test sees every frame (the detector keeps state), so no short-circuiting
        return lambda i, f: sum(bool(test(i, f)) for test in tests) > 0

    def _restore(self, frames: Iterable[np.ndarray], is_cut: CutTest) -> Iterator[_HostFrame]:
        window: dict[int, tuple[np.ndarray, _FrameState]] = {}
        scene_start = next_out = 0
        shape = None
        for i, frame in enumerate(frames):
            check_frame(frame, i)
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise UsageError(
                    f"frame {i} is {frame.shape[1]}x{frame.shape[0]} but the clip started at "
                    f"{shape[1]}x{shape[0]}; the frame size must not change within a clip"
                )
            if is_cut(i, frame) and i > scene_start:
                yield from self._emit(window, range(next_out, i), scene_start, i - 1)
                window.clear()
                scene_start = next_out = i
            window[i] = (frame, self._frame_state(frame))
            t = i - self.radius  # the newest frame whose whole window has arrived
            if t >= next_out:
                yield from self._emit(window, [t], scene_start, i)
                next_out = t + 1
        if shape is not None:
            yield from self._emit(window, range(next_out, i + 1), scene_start, i)

    def _emit(self, window: dict, outputs: Iterable[int], scene_start: int, scene_end: int) -> Iterator[_HostFrame]:
        for t in outputs:
            frame, state = window[t]
            if self.stage == 1:
                result = state.stage1
            else:
                indices = window_indices(t, self.radius, scene_start, scene_end)
                result = self._stage2([window[j][1] for j in indices])
            yield self._to_host(result, frame)
            for stale in [j for j in window if j <= t - self.radius]:
                del window[stale]

    @staticmethod
    def _pipelined(pending: Iterator[_HostFrame]) -> Iterator[np.ndarray]:
        """Yield each frame once the next one is queued, so copies overlap compute on CUDA."""
        previous = None
        for item in pending:
            if previous is not None:
                yield previous.result()
            previous = item
        if previous is not None:
            yield previous.result()

    # ---- random access, for front-ends that own the window (VapourSynth) -------------------

    def stage1_array(self, frame: np.ndarray) -> np.ndarray:
        """Stage 1 of one frame, as float32 H x W x 3 in [0, 1]."""
        s1 = self._stage1(self._to_tensor(check_frame(frame)))
        return self._to_host(s1, frame.astype(np.float32, copy=False)).result()

    def stage2_array(self, window: list[np.ndarray], keys: list[Hashable]) -> np.ndarray:
        """Stage 2 for the centre of `window` (stage-1 outputs, float32), caching each frame's
        encoder pyramids under its key so that overlapping windows encode each frame once."""
        if self.stage != 2:
            raise UsageError("stage2_array needs an engine built with stage=2")
        if len(window) != 2 * self.radius + 1 or len(keys) != len(window):
            raise UsageError(f"stage 2 needs a window of {2 * self.radius + 1} frames and as many keys")
        states = []
        for frame, key in zip(window, keys):
            if key not in self._lru:
                self._lru[key] = self._encoded(self._to_tensor(check_frame(frame)))
            self._lru.move_to_end(key)
            states.append(self._lru[key])
        while len(self._lru) > 4 * (2 * self.radius + 1):
            self._lru.popitem(last=False)
        return self._to_host(self._stage2(states), window[len(window) // 2]).result()

    # ---- padded random access, thread-safe, for front-ends that request frames out of order
    # and from several threads at once (VapourSynth). Stage-1 outputs travel padded to the
    # engine's multiple: stage 2 must see the padded stage-1 output itself, as `frames` does,
    # because re-padding a cropped one changes the pixels near the bottom and right edges.

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the arrays that `stage1_padded` returns for an H x W frame."""
        return round_up(height, self.multiple), round_up(width, self.multiple)

    def stage1_padded(self, frame: np.ndarray) -> np.ndarray:
        """Stage 1 of one H x W x 3 frame as float32 3 x H' x W' in [-1, 1]: exactly the
        tensor that `frames` keeps."""
        s1 = self._stage1(self._to_tensor(check_frame(frame)))
        return _HostFrame(s1[0]).result()

    def stage2_padded(self, window: list[Sequence[np.ndarray]], keys: list[Hashable], like: np.ndarray) -> np.ndarray:
        """Stage 2 for the centre of a window of `stage1_padded` outputs (clamped to the scene
        by the caller, see engine.window), as a frame of `like`'s shape and dtype. Each window
        frame is a 3 x H' x W' array or its three planes (VapourSynth frames are planar); it is
        read only when its key is not cached yet. The cache holds each frame's encoder
        pyramids; safe to call from several threads, each under its own CUDA stream."""
        if self.stage != 2:
            raise UsageError("stage2_padded needs an engine built with stage=2")
        if len(window) != 2 * self.radius + 1 or len(keys) != len(window):
            raise UsageError(f"stage 2 needs a window of {2 * self.radius + 1} frames and as many keys")
        states = [self._shared_state(frame, key) for frame, key in zip(window, keys, strict=True)]
        return self._to_host(self._stage2(states), like).result()

    def _from_padded(self, planes: Sequence[np.ndarray]) -> torch.Tensor:
        # one copy per plane straight into a (pinned, on CUDA) staging tensor: planes may be
        # strided views of someone else's memory
        host = torch.empty((3, *planes[0].shape), dtype=torch.float32, pin_memory=self.device.type == "cuda")
        for p in range(3):
            np.copyto(host[p].numpy(), planes[p])
        x = host.to(self.device, non_blocking=True)[None]
        return x.contiguous(memory_format=self.memory_format)

    def _shared_state(self, padded: Sequence[np.ndarray], key: Hashable) -> _FrameState:
        with self._shared_lock:
            entry = self._shared.get(key)
            owner = entry is None
            if owner:
                entry = self._shared[key] = Future()
            self._shared.move_to_end(key)
            while len(self._shared) > 4 * (2 * self.radius + 1):
                self._shared.popitem(last=False)  # waiters keep their own reference
        if owner:
            try:
                state = self._encoded(self._from_padded(padded))
            except BaseException as exc:
                with self._shared_lock:
                    if self._shared.get(key) is entry:
                        del self._shared[key]
                entry.set_exception(exc)
                raise
            if self.device.type == "cuda":
                state.ready = torch.cuda.Event()
                state.ready.record()
            entry.set_result(state)
        state = entry.result()
        if state.ready is not None:
            # the encoding may have been queued on another thread's stream: wait for it on
            # ours, and keep the allocator from reusing its memory before ours is done
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(state.ready)
            for tensor in state.tensors():
                tensor.record_stream(stream)
        return state
