"""Colour metadata of a video stream and the RGB <-> YUV conversions that honour it.

`Colour` holds the four tags FFmpeg knows (matrix, range, primaries, transfer) as FFmpeg's
integer codes, read from the source and written unchanged to the output, so that an
untagged source gives an untagged output and a tagged one keeps its tags. Every conversion
passes matrix and range explicitly: PyAV's reformatter otherwise assumes an UNSPECIFIED
source range, and an RGB frame made from numpy carries no matrix at all (BT.601 would be
used for HD output while it is tagged BT.709).

HDR10 sources also carry static metadata (the mastering display's colour volume and the
content's light levels) as frame side data; `HdrMetadata` reads it, and the writer hands it to
the encoders that can store it (x265, x264, SVT-AV1).

Grey pictures are converted here rather than by swscale, which takes every grey picture as
full range: by their range, and to grey by the matrix's luma weights.

Public API: `Colour` (`from_frame`, `matrix_for`, `range_for`, `tag`), `HdrMetadata`, `to_rgb`,
`from_rgb`, `rgb_format`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
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


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata: the mastering display (SMPTE ST 2086: CIE 1931 xy of its red, green
    and blue primaries and white point, its luminance range in cd/m2) and the content's light
    levels (CTA-861.3: brightest pixel and brightest frame average, cd/m2). None: not given."""

    primaries: tuple[tuple[Fraction, Fraction], ...] | None = None  # red, green, blue
    white_point: tuple[Fraction, Fraction] | None = None
    luminance: tuple[Fraction, Fraction] | None = None  # min, max
    max_cll: int | None = None
    max_fall: int | None = None

    @classmethod
    def from_frame(cls, frame: av.VideoFrame) -> HdrMetadata | None:
        side_data = frame.side_data
        values: dict = {}
        if SideDataType.MASTERING_DISPLAY_METADATA in side_data:
            # AVMasteringDisplayMetadata: 10 AVRationals (r, g, b, white point xy; min, max
            # luminance), then has_primaries and has_luminance
            ints = struct.unpack("<22i", bytes(side_data[SideDataType.MASTERING_DISPLAY_METADATA]))
            ratios = [Fraction(n, d) if d else Fraction(0) for n, d in zip(ints[0:20:2], ints[1:20:2])]
            if ints[20]:
                values["primaries"] = tuple(zip(ratios[0:6:2], ratios[1:6:2]))
                values["white_point"] = (ratios[6], ratios[7])
            if ints[21]:
                values["luminance"] = (ratios[8], ratios[9])
        if SideDataType.CONTENT_LIGHT_LEVEL in side_data:
            values["max_cll"], values["max_fall"] = struct.unpack("<2I", bytes(side_data[SideDataType.CONTENT_LIGHT_LEVEL]))
        return cls(**values) if values else None

    def encoder_params(self, codec: str) -> tuple[str, list[str]] | None:
        """The option of `codec` that stores this metadata and its key=value entries, or None
        where the encoder cannot store it."""
        syntax = HDR_SYNTAX.get(codec)
        if syntax is None:
            return None
        option, display_key, light_key, chroma_unit, luminance_unit = syntax

        def number(value: Fraction, unit: int | None) -> str:
            return str(round(value * unit)) if unit else f"{float(value):.4f}"

        def xy(point: tuple[Fraction, Fraction]) -> str:
            return f"({number(point[0], chroma_unit)},{number(point[1], chroma_unit)})"

        entries = []
        if self.primaries is not None and self.white_point is not None and self.luminance is not None:
            red, green, blue = self.primaries
            low, high = (number(v, luminance_unit) for v in self.luminance)
            entries.append(f"{display_key}=G{xy(green)}B{xy(blue)}R{xy(red)}WP{xy(self.white_point)}L({high},{low})")
        if self.max_cll is not None:
            entries.append(f"{light_key}={self.max_cll},{self.max_fall}")
        return option, entries


# The encoders that store HDR10 metadata: their option, its two keys, and the units they count
# chromaticity and luminance in (x264, x265: integers of 0.00002 and of 0.0001 cd/m2; SVT-AV1:
# decimals)
HDR_SYNTAX = {
    "libx265": ("x265-params", "master-display", "max-cll", 50000, 10000),
    "libx264": ("x264-params", "mastering-display", "cll", 50000, 10000),
    "libsvtav1": ("svtav1-params", "mastering-display", "content-light", None, None),
}


def rgb_format(bit_depth: int) -> str:
    """The packed RGB format the engine gets: 8 bits as uint8, deeper sources as uint16."""
    return "rgb24" if bit_depth <= 8 else "rgb48le"


# Luma weights (Kr, Kb) by matrix code, for grey output: BT.709, FCC, BT.601 (two codes),
# SMPTE 240M, BT.2020 (two codes); an unknown code weighs like BT.709
LUMA = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
        9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
GREY_ARRAYS = {"gray": 8, "gray9le": 9, "gray10le": 10, "gray12le": 12, "gray14le": 14, "gray16le": 16}  # PyAV's numpy formats


def _is_grey(fmt: av.VideoFormat) -> bool:
    return not fmt.has_palette and sum(not c.is_alpha for c in fmt.components) == 1


def _grey_levels(depth: int, colour: Colour) -> tuple[float, float]:
    """Code value of black and the span to white of a grey picture in this range."""
    if colour.range_for == int(ColorRange.MPEG):
        return 16 << (depth - 8), 219 << (depth - 8)
    return 0, (1 << depth) - 1


def _grey_to_rgb(frame: av.VideoFrame, colour: Colour, rgb: str) -> np.ndarray:
    """Grey by its range; swscale's grey conversions take every grey picture as full range, so
    limited-range black (16) would reach the model, and a YUV output, as dark grey."""
    if frame.format.name not in GREY_ARRAYS:  # with alpha, or big-endian: the plain 16-bit form
        frame = frame.reformat(format="gray16le")
    depth = GREY_ARRAYS[frame.format.name]
    black, span = _grey_levels(depth, colour)
    top = 255 if rgb == "rgb24" else 65535
    levels = (frame.to_ndarray().astype(np.float32) - black) * (top / span)
    grey = np.clip(np.rint(levels), 0, top).astype(np.uint8 if top == 255 else np.uint16)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _rgb_to_grey(image: np.ndarray, colour: Colour, pix_fmt: str) -> av.VideoFrame:
    """The luma of an RGB array, in the grey format `pix_fmt`, by the source's matrix and range."""
    plain = pix_fmt if pix_fmt in GREY_ARRAYS else "gray16le"
    depth = GREY_ARRAYS[plain]
    kr, kb = LUMA.get(colour.matrix_for(image.shape[1], image.shape[0]), LUMA[1])
    rgb = image.astype(np.float32) / (255 if image.dtype == np.uint8 else 65535)
    luma = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    black, span = _grey_levels(depth, colour)
    values = np.clip(np.rint(black + luma * span), 0, (1 << depth) - 1).astype(np.uint8 if depth == 8 else np.uint16)
    frame = av.VideoFrame.from_ndarray(values, format=plain)
    return frame if plain == pix_fmt else frame.reformat(format=pix_fmt)


def to_rgb(frame: av.VideoFrame, colour: Colour, rgb: str) -> np.ndarray:
    """A decoded frame as an H x W x 3 array (uint8 for rgb24, uint16 for rgb48le)."""
    if _is_grey(frame.format):
        return _grey_to_rgb(frame, colour, rgb)
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
    if _is_grey(av.VideoFormat(pix_fmt)):
        out = _rgb_to_grey(image, colour, pix_fmt)
    elif av.VideoFormat(pix_fmt).is_rgb:
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
