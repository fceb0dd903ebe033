"""Whether a video stream was coded losslessly, so that a writer can keep a master a master.

Codecs such as FFV1, PNG or HuffYUV are lossless by definition. H.264 can be either: a lossless
stream (x264 `qp=0`, NVENC lossless) says so in its sequence parameter set, whose
`qpprime_y_zero_transform_bypass_flag` lets macroblocks skip transform and quantisation, and
encoders set it only for lossless coding. HEVC says it in its picture parameter set
(`transquant_bypass_enabled_flag`, which x265 sets for `lossless=1` only). Other codecs that
can be both (AV1, VP9) count as lossy: their streams do not say it where a demuxer can see it.
"""

from __future__ import annotations

import av

__all__ = ["is_lossless"]

# profile_idc values whose SPS carries chroma format, bit depths and the bypass flag (H.264 7.3.2.1.1)
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
SPS_NAL_TYPE = 7
HEVC_PPS_NAL_TYPE = 34


def is_lossless(stream: av.video.stream.VideoStream) -> bool:
    """True when every frame of `stream` decodes to exactly what its encoder was given."""
    context = stream.codec_context
    try:
        codec = av.Codec(context.name, "r")
    except (ValueError, av.error.FFmpegError):
        return False
    if codec.lossless and not codec.lossy:
        return True
    if context.name == "h264":
        sps = _h264_sps(bytes(context.extradata or b""))
        return sps is not None and _transform_bypass(sps)
    if context.name == "hevc":
        pps = _hevc_pps(bytes(context.extradata or b""))
        return pps is not None and _transquant_bypass(pps)
    return False


def _h264_sps(extradata: bytes) -> bytes | None:
    """The first sequence parameter set NAL unit (header byte included) in an avcC record (MP4,
    Matroska) or in Annex B start-code form (raw .h264, MPEG-TS)."""
    if len(extradata) > 8 and extradata[0] == 1:  # avcC: version 1, ..., SPS count, length, SPS
        length = int.from_bytes(extradata[6:8], "big")
        return extradata[8:8 + length] if extradata[5] & 0x1F else None
    for unit in extradata.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if unit and unit[0] & 0x1F == SPS_NAL_TYPE:
            return unit
    return None


def _hevc_pps(extradata: bytes) -> bytes | None:
    """The first picture parameter set NAL unit (2-byte header included) in an hvcC record
    (MP4, Matroska: 22 bytes of fields, then arrays of NAL units by type) or in Annex B form."""
    if len(extradata) > 23 and extradata[0] == 1:
        position, arrays = 23, extradata[22]
        for _ in range(arrays):
            kind, count = extradata[position] & 0x3F, int.from_bytes(extradata[position + 1:position + 3], "big")
            position += 3
            for _ in range(count):
                length = int.from_bytes(extradata[position:position + 2], "big")
                if kind == HEVC_PPS_NAL_TYPE:
                    return extradata[position + 2:position + 2 + length]
                position += 2 + length
        return None
    for unit in extradata.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01"):
        if unit and unit[0] >> 1 & 0x3F == HEVC_PPS_NAL_TYPE:
            return unit
    return None


class _Bits:
    """An MSB-first bit reader over a NAL unit's payload with emulation prevention removed."""

    def __init__(self, payload: bytes) -> None:
        self.data = payload.replace(b"\x00\x00\x03", b"\x00\x00")
        self.position = 0

    def bit(self) -> int:
        if self.position >= 8 * len(self.data):
            raise EOFError
        value = self.data[self.position // 8] >> (7 - self.position % 8) & 1
        self.position += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = value << 1 | self.bit()
        return value

    def exp_golomb(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.bits(zeros)


def _transform_bypass(sps: bytes) -> bool:
    bits = _Bits(sps[1:])  # after the NAL header byte
    try:
        profile = bits.bits(8)
        bits.bits(16)  # constraint flags, level
        bits.exp_golomb()  # seq_parameter_set_id
        if profile not in HIGH_PROFILES:
            return False
        if bits.exp_golomb() == 3:  # chroma_format_idc 4:4:4
            bits.bit()  # separate_colour_plane_flag
        bits.exp_golomb()  # bit_depth_luma_minus8
        bits.exp_golomb()  # bit_depth_chroma_minus8
        return bits.bit() == 1
    except EOFError:
        return False


def _transquant_bypass(pps: bytes) -> bool:
    bits = _Bits(pps[2:])  # after the two header bytes (H.265 7.3.2.3.1)
    try:
        bits.exp_golomb()  # pps_pic_parameter_set_id
        bits.exp_golomb()  # pps_seq_parameter_set_id
        bits.bits(7)  # dependent slices, output flag, 3 extra slice header bits, sign hiding, cabac init
        bits.exp_golomb()  # num_ref_idx_l0_default_active_minus1
        bits.exp_golomb()  # num_ref_idx_l1_default_active_minus1
        bits.exp_golomb()  # init_qp_minus26 (signed; its length is all that matters here)
        bits.bits(2)  # constrained intra prediction, transform skip
        if bits.bit():  # cu_qp_delta_enabled_flag
            bits.exp_golomb()  # diff_cu_qp_delta_depth
        bits.exp_golomb()  # pps_cb_qp_offset
        bits.exp_golomb()  # pps_cr_qp_offset
        bits.bits(3)  # slice chroma qp offsets, weighted prediction, weighted biprediction
        return bits.bit() == 1
    except EOFError:
        return False
