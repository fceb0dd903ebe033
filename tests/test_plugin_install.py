"""core.deblur.Atrous as a script author meets it: in a fresh Python process with no
LoadPlugin, and under vspipe writing y4m that PyAV decodes. Under `make test` the plugin comes
from the installed package; otherwise the deblur_plugin fixture builds it (conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import vapoursynth as vs

SCRIPT = """\
import vapoursynth as vs
core = vs.core
clip = core.std.BlankClip(width=64, height=48, format=vs.YUV420P8, length={frames}, color=[90, 110, 140])
clip = clip.std.SetFrameProps(_Matrix=1, _Range=0)
clip = clip.deblur.Atrous(weights={weights!r}, stage=2)
clip.set_output()
"""


def test_plain_python_finds_the_plugin_without_loadplugin(deblur_plugin):
    code = "import vapoursynth as vs; f = vs.core.deblur.Atrous; print(f.signature)"
    done = subprocess.run([sys.executable, "-c", code], env=deblur_plugin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("clip:vnode;weights:data:opt;")


def test_installed_layout_autoloads(deblur_plugin):
    """Where VapourSynth looks: the wheel's vapoursynth/plugins/vsdeblur/ or the dev build."""
    folder = Path(deblur_plugin.get("VAPOURSYNTH_EXTRA_PLUGIN_PATH", vs.get_plugin_dir())) / "vsdeblur"
    assert (folder / "manifest.vs").read_text().split() == ["[VapourSynth", "Manifest", "V1]", "libvsdeblur"]
    assert (folder / "libvsdeblur.so").is_file()


def _vspipe() -> str:
    found = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or shutil.which("vspipe")
    if found is None:
        pytest.fail("vspipe not found; it comes with the vapoursynth wheel")
    return found


def test_vspipe_y4m_decodes_with_the_right_frame_count(deblur_plugin, tiny_weights, tmp_path):
    frames = 4
    script = tmp_path / "deblur.vpy"
    script.write_text(SCRIPT.format(frames=frames, weights=str(tiny_weights)))
    # vspipe loads Python through the configuration that `vapoursynth config` writes; keep it
    # in a private folder so that the user's configuration is left alone
    env = dict(deblur_plugin, XDG_CONFIG_HOME=str(tmp_path / "config"))
    subprocess.run([sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True, timeout=60)
    output = tmp_path / "out.y4m"
    with output.open("wb") as sink:
        done = subprocess.run([_vspipe(), "-c", "y4m", str(script), "-"], env=env, stdout=sink, stderr=subprocess.PIPE, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    with av.open(str(output)) as container:
        decoded = [frame for frame in container.decode(video=0)]
    assert len(decoded) == frames
    assert (decoded[0].width, decoded[0].height, decoded[0].format.name) == (64, 48, "yuv420p")
