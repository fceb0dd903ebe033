"""`Deblurrer`: the engine's one public face. It wires the parts together and adds nothing of
its own: the runtime (vsdeblur.backends.runtime: device, backend, precision), host <-> device
frames (transfer.py), the tiled and ensembled networks (networks.py), the window and its cache
(schedule.py), scene cuts (window.py)."""

from __future__ import annotations

import sys
from collections.abc import Collection, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vsdeblur.config import EngineSettings
from vsdeblur.engine.networks import EngineStats, FrameState, Networks
from vsdeblur.backends.runtime import resolve_runtime
from vsdeblur.engine.prior_inputs import Planes, PriorInputs
from vsdeblur.engine.schedule import Scheduler
from vsdeblur.engine.tiling import round_up
from vsdeblur.engine.transfer import HostFrame, Transfer, check_frame, check_planes
from vsdeblur.engine.window import CutTest, chosen_stage, cut_test, window_radius
from vsdeblur.errors import UsageError
from vsdeblur.models import Preset
from vsdeblur.weights import Weights, resolve_weights


class Deblurrer:
    """Deblur frames with a trained model.

    Built from engine settings (vsdeblur.config.EngineSettings, the ENGINE options checked),
    or from the same options as keywords, or both (keywords replace the settings' values):
    `Deblurrer(weights="model.safetensors", precision="fp32")`. The options (ENGINE in
    vsdeblur.config says each one's meaning and bounds):

        weights, preset, stage, radius: the model (default: the shipped weights, their preset,
            the highest stage they hold, the radius they were trained with);
        device, precision, backend, compile: the runtime (vsdeblur.backends.runtime);
        tile, overlap, ensemble: how the networks cover a frame;
        scene_threshold: the scene-cut rule's threshold (0: none; cuts can still be passed to
            `frames`).
    """

    def __init__(self, settings: EngineSettings | None = None, /, **options: Any) -> None:
        settings = _settings(settings, options)
        loaded = resolve_weights(settings.weights)
        if settings.preset is not None and settings.preset != loaded.preset.name:
            raise UsageError(
                f"{loaded.path.name} was trained as preset {loaded.preset.name!r}, not {settings.preset!r}; "
                "drop the preset option or pass matching weights"
            )
        models = {s: loaded.build(s) for s in range(1, chosen_stage(loaded, settings.stage) + 1)}
        self.weights_path: Path | None = loaded.path
        self._setup(loaded.preset, models, settings, loaded)

    @classmethod
    def from_models(cls, preset: Preset, models: dict[int, nn.Module], settings: EngineSettings | None = None, **options: Any) -> Deblurrer:
        """An engine over modules in memory (training validation, benchmarks); the settings'
        weights, preset and stage are those of the modules."""
        self = cls.__new__(cls)
        self.weights_path = None
        settings = _settings(settings, options)
        self._setup(preset, models, settings)
        return self

    def _setup(self, preset: Preset, models: dict[int, nn.Module], settings: EngineSettings, weights: Weights | None = None) -> None:
        self._noted: set[str] = set()
        self.settings, self.preset, self.stage = settings, preset, max(models)
        self.radius = window_radius(preset, self.stage, settings.radius)
        self.runtime = resolve_runtime(settings)
        self.device, self.dtype = self.runtime.device, self.runtime.dtype
        self.scene_threshold = settings.scene_threshold
        runner = self.runtime.runner(weights, models, settings.compile)
        self.networks = Networks(preset, runner, self.stage, self.device, self.dtype, settings.tile, settings.overlap, settings.ensemble)
        self.multiple = self.networks.multiple
        self.transfer = Transfer(self.device, self.networks.memory_format, self.multiple)
        self.reads_prior = preset.stage1.prior
        self.prior_inputs = (
            PriorInputs(settings.shutter, self.multiple, self.networks.memory_format, self.note)
            if self.reads_prior else None
        )
        self.scheduler = Scheduler(self.radius, self._frame_state, self.networks.stage2 if self.stage == 2 else None, self._finish,
                                   lookahead=1 if self.reads_prior else 0)

    @property
    def stats(self) -> EngineStats:
        return self.networks.stats

    @property
    def models(self) -> dict[int, nn.Module]:
        """The networks as they run: scales folded, on the device, in the compute precision."""
        return self.networks.models

    def note(self, message: str) -> None:
        """Say something the user should know about how frames are being restored, once per
        engine (front-ends may replace this with their own channel)."""
        if message not in self._noted:
            self._noted.add(message)
            print(f"vsdeblur: note: {message}", file=sys.stderr)

    def _stage1(self, frame: Planes, previous: Planes | None, following: Planes | None) -> torch.Tensor:
        """Stage 1 of a frame (an H x W x 3 array or its planes) given its neighbours in its
        scene, which only a stage 1 that reads the motion prior looks at."""
        x = self.transfer.upload(frame)
        if self.prior_inputs is None:
            return self.networks.stage1(x)
        return self.networks.stage1(x, self.prior_inputs(x, frame, previous, following))

    def _frame_state(self, frame: np.ndarray, previous: np.ndarray | None, following: np.ndarray | None) -> FrameState:
        return self.networks.frame_state(self._stage1(frame, previous, following))

    def _finish(self, result: torch.Tensor, frame: np.ndarray) -> HostFrame:
        return self.transfer.download(result, frame.shape, frame.dtype)

    # ---- streaming --------------------------------------------------------------------------

    def frames(self, frames: Iterable[np.ndarray], cuts: Collection[int] | CutTest | None = None) -> Iterator[np.ndarray]:
        """Restore a sequence of H x W x 3 frames, yielding each in order, same shape and dtype.

        cuts: indices of frames that start a new scene, or a callable (index, frame) -> bool;
        combined with the engine's scene_threshold detector. No window crosses a cut.
        """
        return (frame for _, frame in self.tagged(((None, f) for f in frames), cuts))

    def tagged(self, items: Iterable[tuple[Any, np.ndarray]], cuts: Collection[int] | CutTest | None = None) -> Iterator[tuple[Any, np.ndarray]]:
        """As `frames`, over (tag, frame) pairs: each restored frame comes out with its tag (a
        timestamp, a source frame), so that callers need not track what is inside the window."""
        return _pipelined(self.scheduler.stream(items, cut_test(cuts, self.scene_threshold)))

    def image(self, image: np.ndarray) -> np.ndarray:
        """Restore a single H x W x 3 image (stage 2 sees it as a one-frame clip). A single
        picture has no neighbours: a model that reads the motion prior runs blind on it, and
        says so once."""
        return next(self.frames([image]))

    def frame(self, frame: np.ndarray, previous: np.ndarray | None = None, following: np.ndarray | None = None) -> np.ndarray:
        """Stage 1 alone (an engine of stage 1) of one H x W x 3 frame given its neighbours in
        its scene, for callers that read clips at random (VapourSynth); with no neighbours
        it is `image`."""
        if self.stage != 1:
            raise UsageError("frame needs an engine built with stage=1; stage 2 reads windows (stage2_padded)")
        checked = check_frame(frame)
        return self._finish(self._stage1(checked, previous, following), checked).result()

    # ---- random access, for front-ends that request frames out of order and from several
    # threads at once (VapourSynth). Stage-1 outputs travel padded to the engine's multiple:
    # stage 2 must see the padded stage-1 output itself, as `frames` does, because re-padding
    # a cropped one changes the pixels near the bottom and right edges.

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the arrays that `stage1_padded` returns for an H x W frame."""
        return round_up(height, self.multiple), round_up(width, self.multiple)

    def padded_dtype(self, source: np.dtype) -> np.dtype:
        """The dtype of `stage1_padded`'s arrays for frames of dtype `source`: float16 when
        the networks compute in fp16 and the source is 8-bit or float16, whose codes float16
        still tells apart (half the memory and copies between VapourSynth's nodes); else
        float32, so that deeper sources keep their precision between the stages."""
        half = self.dtype == torch.float16 and np.dtype(source) in (np.dtype(np.uint8), np.dtype(np.float16))
        return np.dtype(np.float16 if half else np.float32)

    def stage1_padded(self, frame: Planes, previous: Planes | None = None, following: Planes | None = None) -> np.ndarray:
        """Stage 1 of one H x W x 3 frame, or of its three planes, as a 3 x H' x W' array in
        [-1, 1] of `padded_dtype(frame's dtype)`: in float32, exactly the tensor that `frames`
        keeps. previous, following: its neighbours in its scene (None beyond the scene's
        edges), which a model that reads the motion prior needs (engine.window.scene_window
        with radius 1 finds them)."""
        checked = check_frame(frame) if isinstance(frame, np.ndarray) else check_planes(frame)
        s1 = self._stage1(checked, previous, following)[0]
        dtype = self.padded_dtype(checked.dtype if isinstance(checked, np.ndarray) else checked[0].dtype)
        return HostFrame(s1.to(torch.float16) if dtype == np.float16 else s1).result()

    def stage2_padded(self, window: list[Sequence[np.ndarray]], keys: list[Hashable], like: np.ndarray, planar: bool = False) -> np.ndarray:
        """Stage 2 for the centre of a window of `stage1_padded` outputs (clamped to the scene
        by the caller, see engine.window), as a frame of `like`'s shape and dtype (3 x H x W
        when `planar`). Each window frame is a 3 x H' x W' array or its three planes
        (VapourSynth frames are planar); it is read only when its key is not cached yet. Safe
        to call from several threads, each under its own CUDA stream."""
        if self.stage != 2:
            raise UsageError("stage2_padded needs an engine built with stage=2")
        if len(window) != 2 * self.radius + 1 or len(keys) != len(window):
            raise UsageError(f"stage 2 needs a window of {2 * self.radius + 1} frames and as many keys")

        def state(planes: Sequence[np.ndarray]) -> FrameState:
            return self.networks.frame_state(self.transfer.upload_padded(planes))

        result = self.scheduler.window([(key, lambda p=planes: state(p)) for planes, key in zip(window, keys, strict=True)])
        return self.transfer.download(result, like.shape, like.dtype, planar).result()


def _settings(settings: EngineSettings | None, options: dict[str, Any]) -> EngineSettings:
    """`settings` (default: the defaults) with keyword options replacing its values, each
    name and value checked."""
    return EngineSettings.checked({**(settings.as_dict() if settings is not None else {}), **options}, "Deblurrer")


def _pipelined(pending: Iterator[tuple[Any, HostFrame]]) -> Iterator[tuple[Any, np.ndarray]]:
    """Yield each frame once the next one is queued, so copies overlap compute on CUDA."""
    previous = None
    for item in pending:
        if previous is not None:
            yield previous[0], previous[1].result()
        previous = item
    if previous is not None:
        yield previous[0], previous[1].result()
