"""Blur synthesis for whole clips (ShakeBlur) and `vsdeblur eval`, on real encoded files."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.media import make_clip, packets, video_times, write_lossless
from vsdeblur.cli import main
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError
from vsdeblur.io import Reader
from vsdeblur.evaluate import PANEL_GAP, evaluate
from vsdeblur.train.data import dead_leaves, decode_rgb
from vsdeblur.metrics import clip_vmaf, psnr
from vsdeblur.blur import ShakeBlur, ShakeSpec


def sharp_clip(count: int = 4, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    big = (dead_leaves(rng, size + 4 * count) * 255 + 0.5).astype(np.uint8)
    # a slow pan across a dead-leaves picture: neighbouring frames are alike but not equal
    return [np.ascontiguousarray(big[2 * t : 2 * t + size, 3 * t : 3 * t + size]) for t in range(count)]


def test_shake_blur_is_deterministic_keeps_dtype_and_blurs():
    frames = sharp_clip()
    spec = ShakeSpec(min_length=8, max_length=12)
    first = list(ShakeBlur(spec, seed=3).frames(frames))
    again = list(ShakeBlur(spec, seed=3).frames(frames))
    other = list(ShakeBlur(spec, seed=4).frames(frames))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert all(f.dtype == np.uint8 and f.shape == s.shape for f, s in zip(first, frames))
    # each frame has its own kernel
    assert not np.array_equal(ShakeBlur(spec, seed=3).frames([frames[0]]).__next__(), first[1])

    def detail(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image.astype(np.float64), axis=1)).mean())

    for blurred, sharp in zip(first, frames):
        assert detail(blurred) < 0.7 * detail(sharp)
        assert psnr(blurred, sharp) < 30
        # blur moves light around and keeps its total: the mean in linear light stays
        light = [np.mean((f / 255.0) ** 2.2) for f in (blurred, sharp)]
        assert light[0] == pytest.approx(light[1], rel=0.03)

    deep = [(f.astype(np.uint16) * 257) for f in frames[:1]]
    assert next(ShakeBlur(spec, seed=3).frames(deep)).dtype == np.uint16


def test_evaluate_scores_and_rejects_mismatched_clips():
    sharp = sharp_clip()
    strong = list(ShakeBlur(ShakeSpec(min_length=10, max_length=12), seed=1).frames(sharp))
    mild = list(ShakeBlur(ShakeSpec(min_length=2, max_length=3), seed=1).frames(sharp))
    result = evaluate(sharp, strong, mild)
    assert result.frames == 4
    assert result.blurred.psnr == pytest.approx(np.mean([psnr(b, s) for b, s in zip(strong, sharp)]))
    assert result.gain.psnr > 3 and result.gain.ssim > 0 and result.gain.vmaf > 10
    assert result.restored.vmaf == pytest.approx(clip_vmaf(mild, sharp)) and result.blurred.vmaf == pytest.approx(clip_vmaf(strong, sharp))
    assert [f["frame"] for f in result.per_frame] == [0, 1, 2, 3]
    assert result.restored.vmaf == pytest.approx(np.mean([f["restored_vmaf"] for f in result.per_frame]))
    assert "gain" in result.table() and f"{result.restored.psnr:.2f}" in result.table()
    assert "VMAF" in result.table().splitlines()[0] and f"{result.gain.vmaf:+.2f}" in result.table()

    with pytest.raises(UsageError, match="the clips differ in length: restored ended after 3 frames"):
        evaluate(sharp, strong, mild[:3])
    with pytest.raises(UsageError, match="frame 0: sizes differ"):
        evaluate(sharp, strong, [f[:64] for f in mild])
    with pytest.raises(UsageError, match="no frames"):
        evaluate([], [], [])


def test_eval_command_runs_the_model_and_writes_json_and_picture(tmp_path, tiny_weights_stage1):
    sharp = sharp_clip()
    blurred = list(ShakeBlur(ShakeSpec(min_length=6, max_length=8), seed=2).frames(sharp))
    write_lossless(tmp_path / "sharp.mkv", sharp)
    write_lossless(tmp_path / "blurred.mkv", blurred)

    args = ["eval", str(tmp_path / "sharp.mkv"), str(tmp_path / "blurred.mkv"), "--weights", str(tiny_weights_stage1),
            "--json", str(tmp_path / "scores.json"), "--picture", str(tmp_path / "compare.png")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "blurred input" in result.output and "restored" in result.output

    scores = json.loads((tmp_path / "scores.json").read_text())
    restored = list(Deblurrer(weights=tiny_weights_stage1, device="cpu").frames(blurred))
    expected = evaluate(sharp, blurred, restored)
    assert scores["frames"] == 4
    assert scores["restored"]["psnr"] == pytest.approx(expected.restored.psnr, abs=1e-6)
    assert scores["blurred"]["psnr"] == pytest.approx(expected.blurred.psnr, abs=1e-6)
    assert scores["restored"]["vmaf"] == pytest.approx(expected.restored.vmaf, abs=1e-6)
    assert scores["gain"]["vmaf"] == pytest.approx(expected.gain.vmaf, abs=1e-6)
    assert set(scores["per_frame"][0]) >= {"blurred_vmaf", "restored_vmaf"} and "vmaf_skipped" not in scores

    picture = next(decode_rgb(tmp_path / "compare.png"))
    assert picture.shape == (96, 3 * 96 + 2 * PANEL_GAP, 3)
    assert np.array_equal(picture[:, :96], blurred[2])  # the middle frame, blurred panel first
    assert np.array_equal(picture[:, -96:], sharp[2])
    assert not list(tmp_path.glob("*.part"))


def test_eval_command_errors(tmp_path, tiny_weights_stage1):
    write_lossless(tmp_path / "a.mkv", sharp_clip(3))
    write_lossless(tmp_path / "b.mkv", sharp_clip(2))
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(tmp_path / "a.mkv"), str(tmp_path / "missing.mkv"), str(tmp_path / "a.mkv")])
    assert result.exit_code == 2 and "input not found: " in result.output
    result = runner.invoke(main, ["eval", str(tmp_path / "a.mkv"), str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv")])
    assert result.exit_code == 2 and "restored ended after 2 frames" in result.output
    (tmp_path / "text.mkv").write_text("not a video")
    result = runner.invoke(main, ["eval", str(tmp_path / "a.mkv"), str(tmp_path / "text.mkv"), str(tmp_path / "a.mkv")])
    assert result.exit_code == 2 and "text.mkv is not a video file FFmpeg can read" in result.output
    # a --json that cannot be written is refused before any scoring, not after it
    missing = tmp_path / "no-such-folder" / "scores.json"
    result = runner.invoke(main, ["eval", str(tmp_path / "a.mkv"), str(tmp_path / "a.mkv"), str(tmp_path / "a.mkv"), "--json", str(missing)])
    assert result.exit_code == 2 and f"--json {missing}: the folder {missing.parent} does not exist" in result.output


def test_eval_converts_yuv_as_the_pipeline_does(tmp_path):
    # untagged HD YUV is BT.709 to the pipeline (and to players); PyAV's default conversion
    # would take it for BT.601 and score restored frames in colours the model never produced
    from vsdeblur.evaluate import decoded
    from vsdeblur.io import Colour
    from vsdeblur.io.colour import from_rgb

    frames = [np.ascontiguousarray(np.broadcast_to(np.array(c, np.uint8), (720, 1280, 3))) for c in ((200, 40, 60), (30, 160, 220))]
    with av.open(str(tmp_path / "hd.mkv"), "w") as container:
        stream = container.add_stream("ffv1", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv444p"
        for frame in frames:
            container.mux(stream.encode(from_rgb(frame, Colour(), "yuv444p")))
        container.mux(stream.encode(None))
    got = list(decoded(tmp_path / "hd.mkv"))
    assert len(got) == 2 and all(g.dtype == np.uint8 for g in got)
    assert all(np.abs(g.astype(int) - f.astype(int)).max() <= 2 for g, f in zip(got, frames))
    assert [g.shape for g in decoded(tmp_path / "hd.mkv", max_frames=1)] == [(720, 1280, 3)]


def test_synth_command_blurs_a_video_and_keeps_its_streams(tmp_path):
    source = make_clip(tmp_path / "sharp.mkv", width=96, height=64, frames=5, codec="ffv1", pix_fmt="yuv444p")
    out = tmp_path / "blurred.mkv"
    args = ["synth", str(source), str(out), "--min-length", "8", "--max-length", "10", "--seed", "7",
            "--codec", "ffv1", "--pix-fmt", "yuv444p", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert video_times(out) == video_times(source)
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(source, "audio")]

    sharp, blurred = list(decode_rgb(source)), list(decode_rgb(out))
    # FFV1 4:4:4 is lossless up to the RGB<->YUV rounding: the file holds ShakeBlur's frames
    expected = ShakeBlur(ShakeSpec(min_length=8, max_length=10), seed=7).frames(sharp)
    for got, want in zip(blurred, expected, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 3

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "exists" in again.output  # never overwritten without --overwrite
    bad = CliRunner().invoke(main, ["synth", str(source), str(tmp_path / "x.mkv"), "--kernel-size", "8"])
    assert bad.exit_code == 2 and "kernel size must be odd" in bad.output


def test_synth_writes_lossless_test_material_unless_given_a_crf(tmp_path):
    """Blurred test material from a lossy source carries no codec error of its own by default, so
    a score measures the blur and the model, and vsdeblur-stream keeps it lossless in turn."""
    source = make_clip(tmp_path / "sharp.mkv", width=96, height=64, frames=4, pix_fmt="yuv444p", audio=False)
    common = [str(source), "--min-length", "4", "--max-length", "6", "--seed", "2", "-q"]
    assert CliRunner().invoke(main, ["synth", common[0], str(tmp_path / "lossless.mkv"), *common[1:]]).exit_code == 0
    for name, rate in [("crf.mkv", ["--crf", "30"]), ("qp.mkv", ["--encoder-options", "qp=30"])]:
        assert CliRunner().invoke(main, ["synth", common[0], str(tmp_path / name), *common[1:], *rate]).exit_code == 0
        with Reader(tmp_path / name) as lossy:
            assert not lossy.info.lossless
    with Reader(tmp_path / "lossless.mkv") as lossless:
        assert lossless.info.codec == "h264" and lossless.info.lossless
    expected = ShakeBlur(ShakeSpec(min_length=4, max_length=6), seed=2).frames(list(decode_rgb(source)))
    for got, want in zip(decode_rgb(tmp_path / "lossless.mkv"), expected, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 3


def strict_json(text: str) -> dict:
    """json.loads that refuses Infinity and NaN, which are not JSON (Python writes them anyway)."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_identical_clips_score_as_identical_in_valid_json(tmp_path):
    write_lossless(tmp_path / "a.mkv", sharp_clip(3))
    args = ["eval", *[str(tmp_path / "a.mkv")] * 3, "--json", str(tmp_path / "scores.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output and "inf" not in result.output
    rows = {line[:16].strip(): line[16:].split() for line in result.output.splitlines()[1:4]}
    assert rows["blurred input"][0] == rows["restored"][0] == rows["gain"][0] == "identical"
    scores = strict_json((tmp_path / "scores.json").read_text())
    for clip in ("blurred", "restored", "gain"):
        assert scores[clip]["psnr"] is None and scores[clip]["psnr_note"] == "identical"
    assert scores["restored"]["ssim"] == 1.0 and scores["gain"]["ssim"] == 0.0
    assert scores["per_frame"][0]["restored_psnr"] is None and scores["per_frame"][0]["restored_psnr_note"] == "identical"


def test_a_clip_with_some_identical_frames_has_an_infinite_mean_psnr_in_valid_json():
    sharp = sharp_clip(3)
    blurred = list(ShakeBlur(ShakeSpec(min_length=6, max_length=8), seed=2).frames(sharp))
    restored = [sharp[0], *blurred[1:]]  # one frame restored exactly
    result = evaluate(sharp, blurred, restored)
    scores = strict_json(json.dumps(result.as_dict()))
    assert scores["blurred"]["psnr"] == pytest.approx(result.blurred.psnr) and "psnr_note" not in scores["blurred"]
    assert scores["restored"]["psnr"] is None and scores["restored"]["psnr_note"] == "inf"
    assert scores["gain"]["psnr"] is None and scores["gain"]["psnr_note"] == "inf"
    assert scores["per_frame"][1]["restored_psnr"] == pytest.approx(scores["per_frame"][1]["blurred_psnr"])
    table = result.table().splitlines()
    assert table[2].split()[1] == "inf" and table[3].split()[1] == "inf" and "nan" not in result.table()
