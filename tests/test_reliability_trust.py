"""What a file or a setting claims is checked before it is believed (issue 31): a weights header's
preset against bounds and against the file's own tensors before anything is built. Real files in
the real format, the tiny preset, the CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from tests.media import REPO, SAMPLE_CLIP, make_weights
from tests.media import make_clip
from vsdeblur.batch.plan import Source, output_path
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError, WeightsError
from vsdeblur.weights import default_weights_path, read_weights, tensor_digest

# ---- a weights header's preset ---------------------------------------------------------------


def with_preset(path: Path, **stage1: object) -> Path:
    """Tiny stage-1 weights whose header claims other stage-1 sizes; the tensors (and their
    checksum) stay those of the tiny preset."""
    make_weights(path, stages=(1,))
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    preset = json.loads(meta["preset"])
    preset["stage1"].update(stage1)
    meta["preset"] = json.dumps(preset)
    save_file(tensors, str(path), metadata=meta)
    return path


# Runs in a child process that may use little more memory than it has once imported: a header
# believed before its tensors are checked allocates gigabytes (20 GB was seen), and would fail
# here with a MemoryError's traceback instead of taking the machine's memory.
BOUNDED = """
    import resource, sys
    import torch, vsdeblur.engine, vsdeblur.stream
    size = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize:")) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.RLIM_INFINITY))
"""


def bounded(code: str, *args: object) -> subprocess.CompletedProcess:
    script = textwrap.dedent(BOUNDED) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO)


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


HUGE = {"blocks": 100000, "block_width": 2048}  # hundreds of GB of parameters, claimed over 10 kB of tensors
LARGE = {"blocks": 64, "block_width": 2048}  # within the bounds, and still 20 GB


@pytest.mark.parametrize("claim, expected", [
    ({"head_width": -4}, r"stage1\.head_width is -4"),
    ({"head_width": "4"}, r"stage1\.head_width is '4'"),
    ({"rates": [1, 0]}, r"stage1\.rates is \[1, 0\]"),
    ({"head_kernel": 4}, r"stage1\.head_kernel is 4"),
    (HUGE, r"stage1\.blocks is 100000"),
    (LARGE, r"does not fit preset 'tiny' stage 1: .*expected \(1024, 8, 3, 3\)"),
], ids=["negative", "text", "zero-rate", "even-kernel", "huge", "large"])
def test_a_header_preset_is_checked_before_anything_is_built(tmp_path, claim, expected):
    weights = with_preset(tmp_path / "w.safetensors", **claim)
    with pytest.raises(WeightsError, match=r"w\.safetensors .*" + expected):
        read_weights(weights)


@pytest.mark.parametrize("claim", [{"head_width": -4}, HUGE, LARGE], ids=["negative", "huge", "large"])
def test_a_header_preset_that_lies_is_one_line_from_the_stream_and_the_api(tmp_path, claim):
    weights = with_preset(tmp_path / "w.safetensors", **claim)
    out = tmp_path / "out.mkv"
    stream = bounded("""
        from vsdeblur.stream import main  # what the vsdeblur-stream script runs
        main(sys.argv[1:], prog_name="vsdeblur-stream")
    """, SAMPLE_CLIP, out, "--weights", weights, "--device", "cpu")
    assert "w.safetensors" in one_line(stream)
    api = bounded("""
        from vsdeblur import Deblurrer, WeightsError
        try:
            Deblurrer(weights=sys.argv[1], device="cpu")
        except WeightsError as exc:
            print(f"WeightsError: {exc}", file=sys.stderr)
            sys.exit(2)
    """, weights)
    assert one_line(api).startswith("WeightsError: ") and "w.safetensors" in api.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_a_negative_width_is_a_weights_error_in_process(tmp_path):
    with pytest.raises(WeightsError, match=r"stage1\.head_width is -4"):
        Deblurrer(weights=with_preset(tmp_path / "w.safetensors", head_width=-4), device="cpu")


def test_a_negative_width_is_a_vapoursynth_error_when_the_filter_is_called(tmp_path):
    vs = pytest.importorskip("vapoursynth")
    from vsdeblur.vs import atrous

    clip = vs.core.std.BlankClip(width=64, height=48, format=vs.RGB24, length=3)
    with pytest.raises(vs.Error, match=r"^deblur\.Atrous: .*w\.safetensors has a damaged vsdeblur header .*stage1\.head_width is -4"):
        atrous(clip, weights=str(with_preset(tmp_path / "w.safetensors", head_width=-4)), device="cpu")


# ---- the shipped default's header -----------------------------------------------------------

# The SHA-256 (weights.tensor_digest) of the shipped default's tensors as fe4377d trained and
# cdd66af shipped them. Its header's recipe was rewritten afterwards (paths relative to its
# recipe file instead of the training machine's /work/... folders) with the data section kept
# byte for byte: this proves the tensors unchanged. A newly trained default changes it.
SHIPPED_TENSORS = "d9706c06ff0296519494ed44aff684874319cb29bda1d9030ce5385b1e0b2d17"


def strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_shipped_default_names_no_folder_of_the_machine_that_trained_it():
    shipped = read_weights(default_weights_path())
    assert tensor_digest(shipped.tensors) == SHIPPED_TENSORS
    paths = [s for s in strings(shipped.recipe) + strings(shipped.info) if "/" in s]
    assert paths and not [p for p in paths if Path(p).is_absolute() or "/work" in p], paths
    recipe = REPO / "pipelines" / "train" / shipped.recipe["recipe_file"]
    assert recipe.is_file()
    assert (recipe.parent / shipped.recipe["train_data"][0]["path"]).resolve() == (REPO / "data" / "train" / "images").resolve()


# ---- messages that say what is true -----------------------------------------------------------


def stream_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsdeblur.stream", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_stage2_only_weights_do_not_suggest_the_stage_asked_for(tmp_path):
    weights = make_weights(tmp_path / "s2.safetensors", stages=(2,))
    for stage in (None, 2):
        with pytest.raises(WeightsError, match=r"s2\.safetensors holds stage 2 only, without the stage 1 whose output it refines") as caught:
            Deblurrer(weights=weights, stage=stage, device="cpu")
        assert "--stage" not in str(caught.value)
    line = one_line(stream_cli(SAMPLE_CLIP, tmp_path / "out.mkv", "--weights", weights, "--stage", "2", "--device", "cpu"))
    assert "without the stage 1 whose output it refines" in line and "use --stage 2" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s2.safetensors"]


@pytest.mark.parametrize("size, pix_fmt, wanted", [
    ((65, 47), "yuv420p", "yuv420p (4:2:0) needs an even width and an even height; the video is 65x47"),
    ((65, 48), "yuv422p", "yuv422p (4:2:2) needs an even width; the video is 65x48"),
    ((64, 47), "yuv420p", "yuv420p (4:2:0) needs an even width and an even height; the video is 64x47"),
])
def test_a_subsampled_pixel_format_for_an_odd_frame_size_is_named_before_anything_is_written(tmp_path, tiny_weights_stage1, size, pix_fmt, wanted):
    clip = make_clip(tmp_path / "odd.mkv", width=size[0], height=size[1], frames=3, codec="ffv1", pix_fmt="yuv444p", audio=False)
    line = one_line(stream_cli(clip, tmp_path / "out.mkv", "--weights", tiny_weights_stage1, "--device", "cpu", "--pix-fmt", pix_fmt))
    assert wanted in line and "yuv444p" in line and "external library" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mkv"]


# ---- batch name templates ----------------------------------------------------------------------


@pytest.mark.parametrize("template", ["{stem!r}", "{stem:>10}", "{stem!r:>5}", "x/{name!s}.mkv"])
def test_a_bad_name_template_is_quoted_as_written(tmp_path, template):
    source = Source(tmp_path / "x.mp4", PurePosixPath("x.mp4"))
    field = template[template.index("{") : template.index("}") + 1]
    with pytest.raises(UsageError, match=re.escape(f"{field} is not one of its fields")):
        output_path(tmp_path / "out", source, template)


def batch_cli(tiny_weights: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsdeblur.cli", "batch", *map(str, args), "--weights", str(tiny_weights),
                           "--device", "cpu", "--workers", "1", "--lossless"], capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("template, wanted", [
    ("{stem}", "name template '{stem}' gives 'c' for c.mp4: FFmpeg cannot tell a container format from that name"),
    ("{stem}.mvk", "name template '{stem}.mvk' gives 'c.mvk' for c.mp4: FFmpeg cannot tell"),
    ("{stem}.png", "image2 writes a file of its own for every image"),
])
def test_a_name_template_without_a_container_is_refused_before_any_work(tmp_path, tiny_weights_stage1, template, wanted):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mp4", frames=3, audio=False)
    line = one_line(batch_cli(tiny_weights_stage1, clip, "-o", tmp_path / "out", "--name-template", template))
    assert line.startswith("vsdeblur batch: error: ") and wanted in line and ".vsdeblur-join" not in line
    assert not (tmp_path / "out").exists()


def test_a_name_template_without_an_extension_works_with_a_format(tmp_path, tiny_weights_stage1):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mp4", frames=3, audio=False)
    done = batch_cli(tiny_weights_stage1, clip, "-o", tmp_path / "out", "--name-template", "{stem}", "--format", "matroska")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out" / "c").is_file()


def test_a_symlinked_folder_in_the_output_tree_is_named_not_the_template(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(elsewhere)
    source = Source(tmp_path / "x.mp4", PurePosixPath("sub/x.mp4"))
    with pytest.raises(UsageError) as caught:
        output_path(out, source, "{dir}/{stem}.mkv")
    message = str(caught.value)
    assert "name template" not in message
    assert f"{out.resolve() / 'sub'} is a symbolic link to {elsewhere.resolve()}" in message and "outside the output root" in message


def test_a_symlink_at_an_output_name_is_that_output_not_its_target(tmp_path):
    # a link at the name is an existing output (replaced only with --overwrite), never a way out
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "x.mkv").symlink_to(tmp_path / "elsewhere.mkv")
    source = Source(tmp_path / "x.mp4", PurePosixPath("sub/x.mp4"))
    assert output_path(out, source, "{dir}/{stem}.mkv") == out.resolve() / "sub" / "x.mkv"


def test_a_symlinked_batch_output_is_one_line_naming_it(tmp_path, tiny_weights_stage1):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mp4", frames=3, audio=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "c.mkv").symlink_to(tmp_path / "elsewhere.mkv")
    line = one_line(batch_cli(tiny_weights_stage1, clip, "-o", tmp_path / "out"))
    assert "c.mkv" in line and "--overwrite" in line and "name template" not in line
    assert not (tmp_path / "elsewhere.mkv").exists() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c.mkv"]
