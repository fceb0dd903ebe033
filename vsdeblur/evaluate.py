"""`vsdeblur eval`: how much a model restores. Scores the restored frames and the blurred input
against the sharp reference, frame by frame, with the conventions of vsdeblur.metrics (8-bit
RGB, PSNR over all channels, SSIM with an 11x11 Gaussian window; VMAF by libvmaf on the same
frames), and draws a side-by-side picture of one frame: blurred | restored | sharp.

Frames arrive as iterables, so clips of any length are scored in bounded memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vsdeblur.errors import UsageError
from vsdeblur.metrics import VmafMeter, psnr, ssim, to_uint8, vmaf_unavailable

PANEL_GAP = 8  # pixels of black between the panels of the picture
_END = object()


@dataclass
class Scores:
    psnr: float
    ssim: float
    vmaf: float | None  # None where the frames are too small for VMAF


@dataclass
class Evaluation:
    frames: int
    blurred: Scores
    restored: Scores
    per_frame: list[dict] = field(repr=False)
    vmaf_skipped: str | None = None  # why VMAF was not computed

    @property
    def gain(self) -> Scores:
        vmaf = None if self.restored.vmaf is None or self.blurred.vmaf is None else self.restored.vmaf - self.blurred.vmaf
        return Scores(self.restored.psnr - self.blurred.psnr, self.restored.ssim - self.blurred.ssim, vmaf)

    def psnr_notes(self) -> dict[str, str]:
        """Why a PSNR of the clips (blurred, restored, gain) is no number, by clip: "identical"
        where every frame equals its sharp one (PSNR is infinite), "inf" where some do (the mean
        is infinite); for the gain, "identical" where both clips are, else the sign of infinity
        or "undefined"."""
        notes = {}
        for clip in ("blurred", "restored"):
            values = [f[f"{clip}_psnr"] for f in self.per_frame]
            if not math.isfinite(getattr(self, clip).psnr):
                notes[clip] = "identical" if all(math.isinf(v) for v in values) else "inf"
        gain = self.gain.psnr
        if not math.isfinite(gain):
            both = notes.get("blurred") == notes.get("restored") == "identical"
            notes["gain"] = "identical" if both else _word(gain)
        return notes

    def as_dict(self) -> dict:
        """Strict JSON: a PSNR that is no number is null, with its reason under `psnr_note`."""
        skipped = {"vmaf_skipped": self.vmaf_skipped} if self.vmaf_skipped else {}
        notes = self.psnr_notes()
        clips = {clip: _finite(asdict(getattr(self, clip)), {"psnr": notes.get(clip)}) for clip in ("blurred", "restored", "gain")}
        per_frame = [_finite(f, {f"{clip}_psnr": "identical" for clip in ("blurred", "restored")}) for f in self.per_frame]
        return {"frames": self.frames, **clips, "per_frame": per_frame, **skipped,
                "conventions": "8-bit RGB; PSNR over all channels; SSIM 11x11 Gaussian (sigma 1.5), per channel, "
                               "averaged; VMAF vmaf_v0.6.1 (libvmaf) on the frames' luma (BT.709 for HD, BT.601 "
                               "below, limited range); clip scores are means of per-frame scores; a PSNR of "
                               "identical frames is infinite: null, with psnr_note \"identical\" (\"inf\" for a "
                               "mean over some identical frames)"}

    def table(self) -> str:
        notes = self.psnr_notes()
        rows = [("blurred input", "blurred", self.blurred, ""), ("restored", "restored", self.restored, ""), ("gain", "gain", self.gain, "+")]
        lines = [f"{'':<16} {'PSNR (dB)':>10} {'SSIM':>8} {'VMAF':>7}"]
        for name, clip, s, sign in rows:
            vmaf = f"{s.vmaf:>{sign}7.2f}" if s.vmaf is not None else f"{'-':>7}"
            psnr_text = notes[clip] if clip in notes else f"{s.psnr:{sign}.2f}"
            lines.append(f"{name:<16} {psnr_text:>10} {s.ssim:>{sign}8.4f} {vmaf}")
        lines.append(f"({self.frames} frames)")
        if self.vmaf_skipped:
            lines.append(f"no VMAF: {self.vmaf_skipped}")
        return "\n".join(lines)


def _word(value: float) -> str:
    return "undefined" if math.isnan(value) else "inf" if value > 0 else "-inf"


def _finite(record: dict, reasons: dict[str, str | None]) -> dict:
    """`record` with each float that is no number replaced by None, and its reason (from
    `reasons`, else "inf", "-inf" or "undefined") under the key plus "_note"."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key], out[f"{key}_note"] = None, reasons.get(key) or _word(value)
        else:
            out[key] = value
    return out


def evaluate(sharp: Iterable[np.ndarray], blurred: Iterable[np.ndarray], restored: Iterable[np.ndarray],
             picture: Path | None = None, picture_frame: int = 0) -> Evaluation:
    """Score restored and blurred frames against sharp ones; the three must have the same number
    of frames of the same size. Writes the side-by-side picture of frame `picture_frame` (or the
    last frame, for shorter clips) when `picture` is given."""
    per_frame: list[dict] = []
    shown: tuple[np.ndarray, ...] | None = None
    vmaf_skipped: str | None = None
    with ExitStack() as stack:
        meters = {name: stack.enter_context(VmafMeter()) for name in ("blurred", "restored")}
        for index, (s, b, r) in enumerate(_zip_exact(sharp, blurred, restored)):
            if not (s.shape == b.shape == r.shape):
                raise UsageError(f"frame {index}: sizes differ (sharp {_size(s)}, blurred {_size(b)}, restored {_size(r)})")
            if index == 0:
                vmaf_skipped = vmaf_unavailable(s.shape[1], s.shape[0])
            per_frame.append({"frame": index, "blurred_psnr": psnr(b, s), "restored_psnr": psnr(r, s),
                              "blurred_ssim": ssim(b, s), "restored_ssim": ssim(r, s)})
            if vmaf_skipped is None:
                meters["blurred"].add(b, s)
                meters["restored"].add(r, s)
            if index <= picture_frame:
                shown = (b, r, s)
        if not per_frame:
            raise UsageError("nothing to evaluate: no frames")
        if vmaf_skipped is None:
            for name, meter in meters.items():
                for scores, vmaf in zip(per_frame, meter.scores(), strict=True):
                    scores[f"{name}_vmaf"] = vmaf
    if picture is not None and shown is not None:
        write_picture(side_by_side(*shown), picture)

    def mean(clip: str) -> Scores:
        def of(metric: str) -> float:
            return float(np.mean([f[f"{clip}_{metric}"] for f in per_frame]))

        return Scores(of("psnr"), of("ssim"), None if vmaf_skipped else of("vmaf"))

    return Evaluation(len(per_frame), mean("blurred"), mean("restored"), per_frame, vmaf_skipped)


def decoded(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """A clip's frames as 8-bit RGB, converted from YUV as the pipeline converts them (the
    stream's colour tags, accurate chroma), so that scores measure the model and not a second,
    different conversion (PyAV's default takes untagged HD for BT.601)."""
    from vsdeblur.io import Reader

    with Reader(path) as reader:
        for frame in reader.frames(0, max_frames):
            yield to_uint8(frame.rgb)


def _zip_exact(*clips: Iterable[np.ndarray]) -> Iterator[list[np.ndarray]]:
    """zip(sharp, blurred, restored), but clips of different lengths are an error."""
    names = ("sharp", "blurred", "restored")
    iterators = [iter(c) for c in clips]
    index = 0
    while True:
        items = [next(it, _END) for it in iterators]
        ended = [n for n, item in zip(names, items) if item is _END]
        if len(ended) == 3:
            return
        if ended:
            raise UsageError(f"the clips differ in length: {', '.join(ended)} ended after {index} frames, the others go on")
        yield items
        index += 1


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def estimate_frames(path: Path) -> int:
    """The clip's frame count from its headers (Matroska stores none: duration x rate), 0 if unknown."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return stream.frames
            if container.duration and stream.average_rate:
                return round(container.duration / av.time_base * stream.average_rate)
    except (av.FFmpegError, IndexError):
        pass  # decoding reports unreadable files with a better message
    return 0


def side_by_side(blurred: np.ndarray, restored: np.ndarray, sharp: np.ndarray, crop: tuple[int, int] = (512, 384)) -> np.ndarray:
    """Blurred | restored | sharp: the same centred crop of each at 100 %, so detail shows."""
    height, width = sharp.shape[:2]
    w, h = min(crop[0], width), min(crop[1], height)
    x, y = (width - w) // 2, (height - h) // 2
    panels = [to_uint8(f)[y : y + h, x : x + w] for f in (blurred, restored, sharp)]
    gap = np.zeros((h, PANEL_GAP, 3), np.uint8)
    return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)


def write_picture(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 picture as PNG, atomically (a temporary file renamed into place)."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
    codec.time_base = Fraction(1, 1)
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")) + codec.encode(None)
    temporary = path.with_name(f".{path.name}.part")
    try:
        temporary.write_bytes(b"".join(bytes(p) for p in packets))
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
