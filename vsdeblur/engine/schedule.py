"""The window scheduler: which frame's work runs when, and how long its result is kept.

One cache policy serves both ways in: a frame's state (stage 1 and its encoder pyramids) is
computed once, by the first caller that needs it (others wait for that one), and kept while a
window may still read it. A stream knows exactly when that is and releases frames as the
window passes; random access (VapourSynth asks for frames out of order, from several threads)
cannot know, and keeps the most recent few windows' worth.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch

from vsdeblur.engine.networks import FrameState
from vsdeblur.engine.transfer import check_frame
from vsdeblur.engine.window import CutTest, window_indices
from vsdeblur.errors import UsageError

WINDOWS_KEPT = 4  # random access keeps the states of this many windows


class StateCache:
    """Frame states by key: computed once even when several threads ask at once, at most
    `size` kept (least recently used go first), safe from several threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Future[FrameState]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], FrameState]) -> FrameState:
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = Future()
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)  # waiters keep their own reference
        if owner:
            try:
                state = compute()
            except BaseException as exc:
                self.release(key, entry)
                entry.set_exception(exc)
                raise
            _mark_ready(state)
            entry.set_result(state)
        state = entry.result()
        _wait_ready(state)
        return state

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def release(self, key: Hashable, entry: Future | None = None) -> None:
        """Forget a key (only if it still maps to `entry`, when one is given)."""
        with self._lock:
            if key in self._entries and (entry is None or self._entries[key] is entry):
                del self._entries[key]


def _mark_ready(state: FrameState) -> None:
    """On CUDA, mark where the state's work ends on the stream that queued it."""
    if state.stage1.device.type == "cuda":
        state.ready = torch.cuda.Event(blocking=True)
        state.ready.record(torch.cuda.current_stream(state.stage1.device))


def _wait_ready(state: FrameState) -> None:
    """The state may have been computed on another thread's stream: make ours wait for it,
    and keep the allocator from reusing its memory before ours is done with it."""
    if state.ready is not None:
        stream = torch.cuda.current_stream(state.stage1.device)
        stream.wait_event(state.ready)
        for tensor in state.tensors():
            tensor.record_stream(stream)


class Scheduler:
    """Runs frames through the stages in window order.

    compute(frame, previous, following) does a frame's once-per-frame work, given its
    neighbours in its scene (None beyond a scene's edge); aggregate(window states) its stage
    2; finish(result tensor, frame) hands a result towards the host. With `lookahead` 1 a
    frame's work waits for the next frame (or its scene's end): a stage 1 that reads the
    motion prior needs both neighbours; with 0 it runs as the frame arrives."""

    def __init__(
        self,
        radius: int,
        compute: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], FrameState],
        aggregate: Callable[[list[FrameState]], torch.Tensor] | None,
        finish: Callable[[torch.Tensor, np.ndarray], Any],
        lookahead: int = 0,
    ) -> None:
        self.radius, self.compute, self.aggregate, self.finish = radius, compute, aggregate, finish
        self.lookahead = lookahead
        self.shared = StateCache(WINDOWS_KEPT * (2 * radius + 1))

    def stream(self, items: Iterable[tuple[Any, np.ndarray]], is_cut: CutTest) -> Iterator[tuple[Any, Any]]:
        """(tag, frame) pairs in clip order -> (tag, finished result) in the same order. No
        window crosses a cut; at most 2r+1 frames' states are held, and r+2 frames."""
        cache = StateCache(2 * self.radius + 2)
        frames: dict[int, tuple[Any, np.ndarray]] = {}
        scene_start = next_state = next_out = 0
        shape = last = None

        def compute(upto: int, scene_end: int) -> None:
            """The states of frames next_state .. upto, whose scene reaches scene_end."""
            nonlocal next_state
            for j in range(next_state, upto + 1):
                previous = frames[j - 1][1] if j > scene_start else None
                following = frames[j + 1][1] if j < scene_end else None
                cache.get(j, lambda: self.compute(frames[j][1], previous, following))
            next_state = max(next_state, upto + 1)

        def emit(outputs: Iterable[int], scene_end: int) -> Iterator[tuple[Any, Any]]:
            for t in outputs:
                tag, frame = frames[t]
                if self.aggregate is None:
                    result = cache.get(t, _missing).stage1
                else:
                    indices = window_indices(t, self.radius, scene_start, scene_end)
                    result = self.aggregate([cache.get(j, _missing) for j in indices])
                yield tag, self.finish(result, frame)
                cache.release(t - self.radius)  # no later window reads it
                frames.pop(t - 1, None)  # t's state is made and t - 1's output out: nothing reads it

        for i, (tag, frame) in enumerate(items):
            check_frame(frame, i)
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                raise UsageError(
                    f"frame {i} is {frame.shape[1]}x{frame.shape[0]} but the clip started at "
                    f"{shape[1]}x{shape[0]}; the frame size must not change within a clip"
                )
            if is_cut(i, frame) and i > scene_start:
                compute(i - 1, i - 1)
                yield from emit(range(next_out, i), i - 1)
                cache.clear()  # no window reads across the cut
                frames.clear()
                scene_start = next_state = next_out = i
            frames[i] = (tag, frame)
            compute(i - self.lookahead, i)
            last = i
            t = next_state - 1 - self.radius  # the newest frame whose whole window is computed
            if t >= next_out:
                yield from emit(range(next_out, t + 1), i)
                next_out = t + 1
        if last is not None:
            compute(last, last)
            yield from emit(range(next_out, last + 1), last)

    def window(self, states: list[tuple[Hashable, Callable[[], FrameState]]]) -> torch.Tensor:
        """Stage 2 of a window given as (key, how to compute that frame's state): random
        access, each frame's state computed once while it stays cached."""
        return self.aggregate([self.shared.get(key, compute) for key, compute in states])


def _missing() -> FrameState:
    raise RuntimeError("a window frame's state was released before its last window ran")
