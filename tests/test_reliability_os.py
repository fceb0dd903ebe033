"""What the operating system and the files around a run may do to it (issue 31): cached ONNX
graphs are checked before they are believed; opening an input honours signals and a timeout;
a full disk or a read-only folder is one line naming the path; the VapourSynth filter's
smallest frame is checked when it is called. Tiny clips, the tiny model, the CPU."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.media import REPO, make_weights
from tests.media import make_clip, sliding_noise_clip
from vsdeblur.backends.export import MANIFEST, cached_export, export_onnx
from vsdeblur.backends.onnxruntime import OnnxRuntimeBackend
from vsdeblur.errors import UsageError
from vsdeblur.io import Reader
from vsdeblur.models import fold_scales
from vsdeblur.weights import read_weights

# ---- 3: cached ONNX graphs are checked before they are believed ------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny stage-1 models (seeds 0 and 1): the first's cached export, kept pristine, and
    the second's export folder, whose graphs are those of another model."""
    root = tmp_path_factory.mktemp("models")
    ours, theirs = make_weights(root / "ours.safetensors", stages=(1,)), make_weights(root / "theirs.safetensors", stages=(1,), seed=1)
    return {"weights": ours, "cached": cached_export(read_weights(ours), "fp32", root / "pristine"),
            "other": cached_export(read_weights(theirs), "fp32", root / "other")}


def cache_like(two_models: dict[str, Path], root: Path) -> Path:
    """A cache under `root` holding a copy of the first model's export; returns its folder."""
    folder = root / two_models["cached"].name
    shutil.copytree(two_models["cached"], folder)
    return folder


def matches_its_weights(runner: OnnxRuntimeBackend, weights: Path) -> bool:
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        expected = fold_scales(read_weights(weights).build(1)).eval()(x)
    return bool((runner.stage1(x) - expected).abs().max() < 1e-4)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "another model's graph": lambda folder, other: shutil.copyfile(other / "stage1.onnx", folder / "stage1.onnx"),
    "a truncated graph": lambda folder, other: truncate(folder / "stage1.onnx"),
    "another model's export": lambda folder, other: [shutil.copyfile(p, folder / p.name) for p in other.iterdir()],
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_foreign_cached_export_is_exported_again_with_one_note(two_models, tmp_path, capsys, damage):
    folder = cache_like(two_models, tmp_path)
    DAMAGES[damage](folder, two_models["other"])
    capsys.readouterr()
    runner = OnnxRuntimeBackend(two_models["weights"], cache=tmp_path)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and str(folder) in notes[0] and "exporting" in notes[0] and "again" in notes[0], notes
    assert matches_its_weights(runner, two_models["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # nothing set aside is left
    assert json.loads((folder / MANIFEST).read_text()) == json.loads((two_models["cached"] / MANIFEST).read_text()) | {
        "check": json.loads((folder / MANIFEST).read_text())["check"]}
    # and it is believed from now on, without a word
    OnnxRuntimeBackend(two_models["weights"], cache=tmp_path)
    assert capsys.readouterr().err == ""


def test_a_sound_cached_export_is_used_as_it_is(two_models, tmp_path, capsys):
    folder = cache_like(two_models, tmp_path)
    written = (folder / "stage1.onnx").stat().st_mtime_ns
    capsys.readouterr()
    assert matches_its_weights(OnnxRuntimeBackend(two_models["weights"], cache=tmp_path), two_models["weights"])
    assert capsys.readouterr().err == "" and (folder / "stage1.onnx").stat().st_mtime_ns == written


def without_checksums(folder: Path) -> None:
    """As an export written before the manifest recorded each graph's checksum."""
    description = json.loads((folder / MANIFEST).read_text())
    for graph in description["graphs"].values():
        graph.pop("sha256", None)
    (folder / MANIFEST).write_text(json.dumps(description))


@pytest.mark.parametrize("damage, wanted", [
    ("another model's graph", r"stage1\.onnx does not match its checksum in vsdeblur-onnx\.json"),
    ("a truncated graph", r"stage1\.onnx does not match its checksum in vsdeblur-onnx\.json"),
    ("no checksums", r"vsdeblur-onnx\.json records no checksum of stage1\.onnx"),
])
def test_a_damaged_export_folder_given_by_the_user_is_one_line_not_a_re_export(two_models, tmp_path, damage, wanted):
    folder = shutil.copytree(two_models["cached"], tmp_path / "mine")
    if damage == "no checksums":
        without_checksums(folder)
    else:
        DAMAGES[damage](folder, two_models["other"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(UsageError, match=rf"^{folder}: {wanted} .*export the model again") as caught:
        OnnxRuntimeBackend(folder)
    assert "\n" not in str(caught.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the user's folder is left as it was

# ---- 12(f): the VapourSynth filter's smallest frame ------------------------------------------


@pytest.mark.parametrize("width, height", [(16, 64), (64, 31)])
def test_a_frame_below_32x32_is_a_vapoursynth_error_when_the_filter_is_called(tiny_weights, width, height):
    vs = pytest.importorskip("vapoursynth")
    from vsdeblur.vs import atrous

    clip = vs.core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=3)
    with pytest.raises(vs.Error, match=rf"^deblur\.Atrous: the clip is {width}x{height}; vsdeblur needs at least 32x32 pixels$"):
        atrous(clip, weights=str(tiny_weights), device="cpu")


# ---- 9: a full disk or a read-only folder is one line naming the path ------------------------


def on_small_disk(folder: Path, argv: list[object], size: str = "64k", read_only: bool = False,
                  env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `argv` where `folder` is a fresh tmpfs of `size` bytes (read-only: a read-only one):
    a full disk without root, in a user and mount namespace of its own (unshare -r -m). Returns
    the run and what the folder holds after it, as seen from inside (the mount ends with it)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount a small tmpfs")
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder.parent / f"{folder.name}.left"
    options = f"{'ro,' if read_only else ''}size={size}"
    script = (f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))} || exit 99\n"
              f"{shlex.join(map(str, argv))}\nrc=$?\n"
              f"(cd {shlex.quote(str(folder))} && find . -mindepth 1 | sort) > {shlex.quote(str(listing))}\nexit $rc\n")
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if done.returncode == 99:
        pytest.skip(f"unshare -r -m cannot mount a tmpfs here: {done.stderr.strip()}")
    return done, listing.read_text().split()


def the_one_line(done: subprocess.CompletedProcess, *notes: str) -> str:
    """An OS error's line: exit status 2, one error line on stderr after the given notes (the
    starts of lines that say what the run is doing), no traceback."""
    *before, last = done.stderr.strip().splitlines() or [""]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(before) == len(notes) and all(line.startswith(note) for line, note in zip(before, notes)), done.stderr
    assert ": error: " in last, last
    return last


@pytest.fixture(scope="module")
def noise_clip(tmp_path_factory) -> Path:
    """256x192 noise: losslessly far more than a tiny tmpfs holds."""
    return sliding_noise_clip(tmp_path_factory.mktemp("clip") / "c.mkv", 12, seed=6, width=256, height=192)


def test_a_full_disk_under_the_streams_output_is_one_line_and_leaves_nothing(tmp_path, tiny_weights_stage1, noise_clip):
    full = tmp_path / "full"
    done, left = on_small_disk(full, [sys.executable, "-m", "vsdeblur.stream", noise_clip, full / "o.mkv", "--weights",
                                      tiny_weights_stage1, "--device", "cpu", "--lossless", "-q"])
    line = the_one_line(done)
    assert f"{full / 'o.mkv'}: No space left on device" in line, line
    assert left == []  # no half-written output, no temporary file


@pytest.mark.parametrize("where", ["out", "sub/out"])
def test_vsdeblur_export_into_a_read_only_folder_is_one_line(tmp_path, tiny_weights_stage1, where):
    folder = tmp_path / "ro"
    done, left = on_small_disk(folder, [sys.executable, "-m", "vsdeblur.cli", "export", tiny_weights_stage1, "-o", folder / where],
                               read_only=True)
    line = the_one_line(done)
    assert f"{folder / where}" in line and "Read-only file system" in line, line
    assert left == []


def test_vsdeblur_export_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_weights_stage1):
    full = tmp_path / "full"
    done, left = on_small_disk(full, [sys.executable, "-m", "vsdeblur.cli", "export", tiny_weights_stage1, "-o", full / "out"])
    line = the_one_line(done)
    assert f"cannot write {full / 'out'}: No space left on device" in line, line
    assert left == []


def test_the_onnx_cache_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_weights_stage1, noise_clip):
    # the tmpfs holds vsdeblur's cache only: ONNX Runtime keeps files of its own under XDG_CACHE_HOME
    cache = tmp_path / "cache"
    full = cache / "vsdeblur"
    output = tmp_path / "o.mkv"
    done, left = on_small_disk(full, [sys.executable, "-m", "vsdeblur.stream", noise_clip, output, "--weights", tiny_weights_stage1,
                                      "--device", "cpu", "--backend", "onnxruntime", "-q"], env={"XDG_CACHE_HOME": str(cache)})
    line = the_one_line(done, "vsdeblur: exporting tiny-s1.safetensors to ONNX (fp32)")
    assert f"cannot write the ONNX cache {full / 'onnx'}" in line and "No space left on device" in line and "XDG_CACHE_HOME" in line, line
    assert left == ["./onnx"]  # the cache's folder, empty: no partial export
    assert not output.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---- 7: opening the input honours signals, and a network input a timeout ----------------------


class SilentServer:
    """A TCP server on the loopback that accepts every connection and never answers, or answers
    an HTTP request with the start of a file (`sent`, of `size` bytes in all) and then says
    nothing more."""

    def __init__(self, sent: bytes | None = None, size: int = 0) -> None:
        self.sent, self.size = sent, size

    def __enter__(self) -> SilentServer:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x.mkv"
        self.accepted, self.connections = threading.Event(), []
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            self.accepted.set()
            if self.sent is not None:
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in (request := connection.recv(65536)) and request:
                        pass
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-matroska\r\n"
                                       b"Content-Length: %d\r\n\r\n" % self.size + self.sent)

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


def start_stream(source: str, output: Path, weights: Path, *flags: object, **popen) -> subprocess.Popen:
    # SIGINT as a terminal delivers it: a test run started in the background (nohup, a CI job)
    # inherits SIGINT ignored, and a program started so rightly keeps ignoring it
    return subprocess.Popen([sys.executable, "-m", "vsdeblur.stream", source, output, "--weights", weights, "--device", "cpu", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def ended(process: subprocess.Popen, within: float) -> str:
    """The process's stderr once it has ended, which it must within `within` seconds."""
    try:
        return process.communicate(timeout=within)[1].decode()
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"still running {within} s later")


def unread(pipe) -> int:
    """Bytes written into a pipe that its reader has not taken yet."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


SIGNALS = [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]


@pytest.mark.parametrize("given", ["flag", "job file"])
def test_a_silent_server_is_one_line_after_the_network_timeout(tmp_path, tiny_weights_stage1, given):
    job = tmp_path.parent / f"{tmp_path.name}.toml"
    job.write_text("[input]\nnetwork_timeout = 1\n")
    with SilentServer() as server:
        process = start_stream(server.url, tmp_path / "o.mkv", tiny_weights_stage1,
                               *(["--network-timeout", "1"] if given == "flag" else ["--config", job]))
        err = ended(process, 120)
    assert process.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"python -m vsdeblur.stream: error: {server.url}: no answer within 1 s; check the address, "
                                        "or allow longer with --network-timeout (0: wait for ever)"]
    assert list(tmp_path.iterdir()) == []


def test_a_network_input_that_stops_sending_is_one_line_after_the_timeout(tmp_path):
    data = make_clip(tmp_path / "c.mkv", frames=60, audio=False).read_bytes()
    with SilentServer(data[: len(data) // 2], len(data)) as server, Reader(server.url, timeout=1) as reader:
        started = time.monotonic()
        with pytest.raises(UsageError, match=rf"^{server.url}: nothing arrived for 1 s after frame [1-9]\d* \(near [\d.]+ s\); "
                                             r"allow longer with --network-timeout \(0: wait for ever\)$"):
            for _ in reader.frames():
                pass
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("signum, status, word", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_a_silent_server_is_opened_ends_the_run_at_once(tmp_path, tiny_weights_stage1, signum, status, word):
    with SilentServer() as server:
        process = start_stream(server.url, tmp_path / "o.mkv", tiny_weights_stage1)
        assert server.accepted.wait(120), "vsdeblur-stream never connected"
        time.sleep(0.2)  # its request sent: waiting for the answer
        process.send_signal(signum)
        err = ended(process, 15)
    assert process.returncode == status and err.strip().splitlines() == [f"python -m vsdeblur.stream: {word}"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum, status, word", SIGNALS, ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_a_silent_pipe_is_opened_ends_the_run_at_once(tmp_path, tiny_weights_stage1, signum, status, word):
    start = make_clip(tmp_path / "in.mkv", frames=2).read_bytes()[:64]  # a Matroska file's start, then nothing
    output = tmp_path / "out" / "o.mkv"
    output.parent.mkdir()
    process = start_stream("-", output, tiny_weights_stage1, stdin=subprocess.PIPE)
    try:
        process.stdin.write(start)
        process.stdin.flush()
        deadline = time.monotonic() + 120
        while unread(process.stdin) and process.poll() is None and time.monotonic() < deadline:  # taken: FFmpeg is probing, waiting for more
            time.sleep(0.05)
        time.sleep(0.2)
        process.send_signal(signum)
        err = ended(process, 15)
    finally:
        process.stdin.close()
    assert process.returncode == status and err.strip().splitlines() == [f"python -m vsdeblur.stream: {word}"], err
    assert list(output.parent.iterdir()) == []
