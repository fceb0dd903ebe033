"""Which pixel format to write: the one rule that maps a source's pixel format onto what an
encoder takes, and what that choice gives up.

A format is described by its colour model (RGB, YUV or grey), bits per sample and chroma
subsampling. Among the formats an encoder takes (PyAV's `codec.video_formats`), the choice is
the one that loses least, in this order: chroma resolution, then bits per sample, then a
change of colour model (RGB to YUV rounds; RGB to YUV 4:4:4 loses no resolution, so it comes
before RGB to 4:2:0); among equals, the one that adds least (no upsampled chroma, no extra
bits, no alpha plane, which would only hold an opaque constant), and the source's own format
first. So RGB stays RGB where the encoder has it (x265 gbrp, FFV1), else becomes 4:4:4 (x264);
grey stays grey; 16 bits stay 16 where the encoder has them (FFV1), else get the most it has.

`Loss.describe` words what was given up, for `Writer.left_out`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import av

__all__ = ["Layout", "Loss", "choose", "loss"]

# float, deprecated full-range (yuvj*: a range tag does that) and device-independent formats:
# nothing the RGB frames are converted into
UNUSED_PREFIXES = ("yuvj", "xyz")
FLOAT_MARKS = ("f16", "f32", "f64")
GONE = 99  # the chroma of a colour source written as grey: more than any subsampling


@dataclass(frozen=True)
class Layout:
    name: str
    model: str  # "rgb", "yuv" or "grey"
    depth: int  # bits per sample (the deepest component)
    chroma: tuple[int, int]  # log2 of the horizontal and vertical chroma subsampling; (0, 0) for RGB and grey
    alpha: bool

    @classmethod
    def of(cls, name: str) -> Layout | None:
        """The layout of a pixel format, or None for one that frames are never converted into
        (palettes, bitstreams, Bayer, float, hardware surfaces)."""
        fmt = av.VideoFormat(name)
        colour = [c for c in fmt.components if not c.is_alpha]
        if (not colour or fmt.has_palette or fmt.is_bit_stream or fmt.is_bayer
                or name.startswith(UNUSED_PREFIXES) or any(mark in name for mark in FLOAT_MARKS)):
            return None
        model = "rgb" if fmt.is_rgb else "grey" if len(colour) == 1 else "yuv"
        chroma = (0, 0)
        if model == "yuv":  # from the plane sizes of a 64 x 64 frame
            chroma = (round(math.log2(64 / fmt.chroma_width(64))), round(math.log2(64 / fmt.chroma_height(64))))
        return cls(fmt.name, model, max(c.bits for c in colour), chroma, len(colour) < len(fmt.components))


    @classmethod
    def source(cls, name: str) -> Layout:
        """The layout of a source's pixel format: a full-range yuvj format as its yuv twin, a
        palette or bitstream (GIF, 1-bit) as 8-bit RGB."""
        if name.startswith("yuvj"):
            return cls.of("yuv" + name.removeprefix("yuvj"))
        return cls.of(name) or cls(name, "rgb", 8, (0, 0), False)


@dataclass(frozen=True)
class Loss:
    """What writing a source in another pixel format gives up (0 and False: nothing)."""

    source: Layout
    target: Layout
    chroma: int  # halvings of chroma resolution, summed over both axes (GONE: no chroma left)
    bits: int  # bits per sample
    model: bool  # a change of colour model: RGB <-> YUV, or grey into a colour format

    @property
    def none(self) -> bool:
        """Nothing lost: the same model, chroma and depth or more (an exact encode stays exact)."""
        return not (self.chroma or self.bits or self.model)

    @property
    def faithful(self) -> bool:
        """Full resolution and depth kept; a change of model may round by a code value."""
        return not (self.chroma or self.bits)

    def describe(self, codec: str, lossless: bool) -> list[str]:
        """What was given up, one line each, worded to follow 'left out'."""
        source, target = self.source.name, self.target.name
        lines = []
        if self.chroma:
            lines.append(f"the source's chroma resolution ({source} written as {target}: {codec} takes nothing closer)")
        if self.bits:
            lines.append(f"{self.bits} of the source's {self.source.depth} bits per sample ({source} written as {target}: "
                         f"{codec} takes no more; ffv1 keeps them)")
        if self.model and lossless and self.source.model != "grey":
            lines.append(f"the exact {self.source.model.upper()} values ({source} written as {target}: {codec} takes nothing "
                         "closer; the lossless encode keeps its converted values)")
        return lines


def loss(source: Layout, target: Layout) -> Loss:
    if source.model == "grey" or target.model != "grey":
        lost = sum(max(0, t - s) for s, t in zip(source.chroma, target.chroma))
    else:
        lost = GONE
    return Loss(source, target, lost, max(0, source.depth - target.depth), source.model != target.model)


def _cost(source: Layout, target: Layout, position: int) -> tuple:
    given_up = loss(source, target)
    added = sum(max(0, s - t) for s, t in zip(source.chroma, target.chroma)) if source.model != "grey" else 0
    return (given_up.chroma, given_up.bits, given_up.model, added, max(0, target.depth - source.depth),
            target.alpha, target.name != source.name, position)


def choose(source: str, formats: Sequence[str], width: int, height: int) -> Layout | None:
    """The format of `formats` that writes `source` with the least loss, or None when none can
    hold frames of this size. Odd sizes rule out subsampling along that axis (x264, x265 and
    others refuse it)."""
    wanted = Layout.source(source)
    candidates = []
    for position, name in enumerate(formats):
        layout = Layout.of(name)
        if layout is not None and not (width % 2 and layout.chroma[0]) and not (height % 2 and layout.chroma[1]):
            candidates.append((_cost(wanted, layout, position), layout))
    return min(candidates, key=lambda item: item[0])[1] if candidates else None
