"""Colour metadata of a video stream and the RGB <-> YUV conversions that honour it.

`Colour` holds the four tags FFmpeg knows (matrix, range, primaries, transfer) as FFmpeg's
integer codes, read from the source and written unchanged to the output, so that an
untagged source gives an untagged output and a tagged one keeps its tags. Every conversion
passes matrix and range explicitly: PyAV's reformatter otherwise assumes an UNSPECIFIED
source range, and an RGB frame made from numpy carries no matrix at all (BT.601 would be
used for HD output while it is tagged BT.709).

Public API: `Colour` (`from_frame`, `matrix_for`, `range_for`, `tag`), `to_rgb`,
`from_rgb`, `rgb_format`.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

# FFmpeg's code for "unspecified" in all four enums
UNSPECIFIED = 2
RANGE_UNSPECIFIED = 0
MATRIX_RGB = 0  # AVCOL_SPC_RGB: the matrix code of RGB (gbrp) pixel formats

# Chroma-accurate, correctly rounded conversions (the default BILINEAR without ACCURATE_RND
# loses up to one code value and smears chroma edges).
QUALITY = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class Colour:
    """FFmpeg codes: matrix (AVColorSpace), range (AVColorRange), primaries, transfer."""

    matrix: int = UNSPECIFIED
    range: int = RANGE_UNSPECIFIED
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED

    @classmethod
    def from_frame(cls, frame: av.VideoFrame) -> Colour:
        return cls(int(frame.colorspace), int(frame.color_range), int(frame.color_primaries), int(frame.color_trc))

    def matrix_for(self, width: int, height: int) -> int:
        """The matrix to convert with: the tagged one, or what players assume for an untagged
        source (BT.709 for HD, BT.601 for SD)."""
        if self.matrix not in (UNSPECIFIED, 3):  # 3 is "reserved", as useless as unspecified
            return self.matrix
        return int(Colorspace.ITU709) if width >= 1280 or height > 576 else int(Colorspace.ITU601)

    @property
    def range_for(self) -> int:
        """The range to convert with: untagged YUV is limited ("tv") range by convention."""
        return self.range if self.range != RANGE_UNSPECIFIED else int(ColorRange.MPEG)

    def tag(self, target: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
        """Write the tags onto a frame or an encoder's codec context."""
        target.colorspace = self.matrix
        target.color_range = self.range
        target.color_primaries = self.primaries
        target.color_trc = self.transfer


def rgb_format(bit_depth: int) -> str:
    """The packed RGB format the engine gets: 8 bits as uint8, deeper sources as uint16."""
    return "rgb24" if bit_depth <= 8 else "rgb48le"


def to_rgb(frame: av.VideoFrame, colour: Colour, rgb: str) -> np.ndarray:
    """A decoded frame as an H x W x 3 array (uint8 for rgb24, uint16 for rgb48le)."""
    if frame.format.name.startswith(("rgb", "bgr", "gbr")):  # already RGB: no matrix involved
        converted = frame.reformat(format=rgb, interpolation=QUALITY)
    else:
        converted = frame.reformat(
            format=rgb,
            src_colorspace=colour.matrix_for(frame.width, frame.height),
            dst_colorspace=colour.matrix_for(frame.width, frame.height),
            src_color_range=colour.range_for,
            dst_color_range=ColorRange.JPEG,
            interpolation=QUALITY,
        )
    # the array may be a view of the frame's buffer: copy so it outlives the frame
    return np.array(converted.to_ndarray(), copy=True)


def from_rgb(image: np.ndarray, colour: Colour, pix_fmt: str) -> av.VideoFrame:
    """An H x W x 3 uint8/uint16 array as a frame in the encoder's pixel format, converted with
    the source's matrix and range and tagged with the source's colour."""
    rgb = "rgb24" if image.dtype == np.uint8 else "rgb48le"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=rgb)
    if av.VideoFormat(pix_fmt).is_rgb:
        out = frame.reformat(format=pix_fmt, interpolation=QUALITY)
        # no matrix and full range in RGB output; primaries and transfer still hold
        colour = Colour(MATRIX_RGB, int(ColorRange.JPEG), colour.primaries, colour.transfer)
    else:
        matrix = colour.matrix_for(frame.width, frame.height)
        out = frame.reformat(
            format=pix_fmt,
            src_colorspace=matrix,
            dst_colorspace=matrix,
            src_color_range=ColorRange.JPEG,
            dst_color_range=colour.range_for,
            interpolation=QUALITY,
        )
    colour.tag(out)
    return out
