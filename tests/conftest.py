"""Shared fixtures: untrained tiny-preset weights files (real files in the real format), the
bundled sample clip, batch settings and the VapourSynth plugin. Everything runs on the CPU.
Helpers that are not fixtures live in media.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.media import REPO, SAMPLE_CLIP, make_weights
from vsdeblur.batch import resolved_settings


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory) -> Path:
    """Caches (the ONNX graphs that the graph backends export on first use) go to a folder of
    the test session's own, never into the user's ~/.cache; subprocesses inherit it."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny preset, stages 1 and 2, random initialisation (seed 0)."""
    return make_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_weights_stage1(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights") / "tiny-s1.safetensors", stages=(1,))


@pytest.fixture(scope="session")
def sample_clip() -> Path:
    assert SAMPLE_CLIP.is_file(), "the bundled sample clip is missing"
    return SAMPLE_CLIP


@pytest.fixture(scope="session")
def deblur_plugin(tmp_path_factory) -> dict[str, str]:
    """Make core.deblur available in this process; return the environment that gives it to
    subprocesses. An installed vsdeblur (make test, pip install .) is autoloaded; otherwise
    (editable or no install) the shim is built here with CMake and loaded from that folder,
    with vsdeblur imported from this checkout.
    A missing plugin fails the tests that need it: it is part of what is being tested."""
    import os
    import shutil
    import subprocess
    import sys

    import vapoursynth as vs

    env = dict(os.environ)
    if any(p.namespace == "deblur" for p in vs.core.plugins()):
        return env
    if shutil.which("cmake") is None:
        pytest.fail("core.deblur is not installed and CMake is missing to build it (pip install . installs it)")
    build = tmp_path_factory.mktemp("plugin-build")
    for command in (
        ["cmake", "-S", str(REPO), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}"],
        ["cmake", "--build", str(build)],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"building the VapourSynth shim failed:\n{done.stdout}\n{done.stderr}")
    plugins = build / "plugins"
    vs.core.std.LoadPlugin(str(plugins / "vsdeblur" / "libvsdeblur.so"))
    env["VAPOURSYNTH_EXTRA_PLUGIN_PATH"] = str(plugins)
    # and the shim's Python side from this checkout, for vspipe too
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests. The machine runs several test sessions at
    once: one thread each is faster than two threads fighting for the same cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batch_settings(tiny_weights):
    """make(**flags): resolved batch settings with the tiny weights on the CPU, one worker,
    3-frame chunks and lossless output, `flags` on top."""

    def make(**flags):
        values = {"weights": tiny_weights, "device": "cpu", "workers": 1, "chunk_frames": 3, "lossless": True, **flags}
        return resolved_settings(None, values)

    return make
