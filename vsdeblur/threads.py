"""Pipeline stages in threads of their own, joined by bounded queues: decoding, the engine and
encoding overlap (FFmpeg and torch release the GIL), memory stays bounded whatever a clip's
length, and the first error anywhere stops every stage and reaches the caller.

    stop = threading.Event(); channel = Channel(stop)
    stage = Stage("name", work, stop)    # work() puts into / gets from channels
    ...; join([stage]); raise_first([stage])
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

QUEUE_FRAMES = 8  # items per queue: enough to ride out jitter, small enough for 4K in RAM
END = object()  # end-of-stream marker in a queue


class Cancelled(Exception):
    """Raised in a stage when another stage failed or the run was interrupted."""


class Channel:
    """A bounded queue whose blocking calls give up as soon as the run is being stopped."""

    def __init__(self, stop: threading.Event, size: int = QUEUE_FRAMES) -> None:
        self.queue: queue.Queue = queue.Queue(size)
        self.stop = stop

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                return self.queue.put(item, timeout=0.1)
            except queue.Full:
                pass
        raise Cancelled

    def get(self) -> Any:
        while not self.stop.is_set():
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                pass
        raise Cancelled


class Stage(threading.Thread):
    """A pipeline stage in a thread: its first error is kept and stops the whole run."""

    def __init__(self, name: str, work: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.work, self.stop, self.error = work, stop, None

    def run(self) -> None:
        try:
            self.work()
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
            self.stop.set()


@contextmanager
def background(items: Iterable[Any], name: str = "vsdeblur-background") -> Iterator[Iterator[Any]]:
    """`items` produced in a thread of their own, up to QUEUE_FRAMES ahead of the consumer, so
    that decoding, the engine and encoding (FFmpeg and torch release the GIL) overlap as in
    `stream`. The producer's error is raised in the consumer; leaving the block stops it."""
    stop = threading.Event()
    channel = Channel(stop)

    def produce() -> None:
        for item in items:
            channel.put(item)
        channel.put(END)

    def consume() -> Iterator[Any]:
        try:
            while (item := channel.get()) is not END:
                yield item
        except Cancelled:
            raise_first([stage])
            raise

    stage = Stage(name, produce, stop)
    stage.start()
    try:
        yield consume()
    finally:
        stop.set()
        join([stage])


def join(stages: list[Stage]) -> None:
    """Wait for the stages; each leaves its FFmpeg call within moments once stopped."""
    for stage in stages:
        while stage.is_alive():
            stage.join(0.1)


def raise_first(stages: list[Stage]) -> None:
    for stage in stages:
        if stage.error is not None:
            raise stage.error


