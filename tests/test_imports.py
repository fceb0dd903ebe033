"""What loads without torch: the package, its option schema, every command's --help and the
build step that writes the VapourSynth shim's signature. Each runs in a fresh interpreter,
since this one has long imported torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.media import REPO, sliding_noise_clip

NO_TORCH = "\nheavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'vapoursynth'})\nassert not heavy, heavy\n"


def run_without_torch(code: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", code + NO_TORCH, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr


def test_importing_the_package_and_its_schema_loads_no_torch():
    run_without_torch("import sys, vsdeblur, vsdeblur.config")


def test_package_names_are_still_there_when_asked_for():
    done = subprocess.run([sys.executable, "-c", "import sys, vsdeblur; vsdeblur.Deblurrer, vsdeblur.build_model, vsdeblur.PRESETS, "
                           "vsdeblur.EngineStats; print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["True"], done.stderr


def test_vsdeblur_help_and_every_command_help_load_no_torch():
    from vsdeblur.cli import main

    # `python -m vsdeblur --help` through __main__, then each command's --help as the console script runs it
    code = """
import contextlib, io, runpy, sys
from vsdeblur.cli import main
commands, sys.argv = sys.argv[1:], ["vsdeblur", "--help"]
for run in [lambda: runpy.run_module("vsdeblur", run_name="__main__")] + [lambda c=c: main([c, "--help"]) for c in commands]:
    with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
        run()
    assert "Usage:" in shown.getvalue(), shown.getvalue()
"""
    run_without_torch(code, *main.commands)


def test_vsdeblur_stream_help_loads_no_torch():
    run_without_torch("import contextlib, sys\nfrom vsdeblur.stream import main\nwith contextlib.suppress(SystemExit):\n    main(['--help'])\n")


def test_planning_a_batch_job_loads_no_torch(tmp_path, tiny_weights):
    # `vsdeblur batch` reads the weights' header and plans the chunks; torch waits for a chunk
    code = "import sys\nfrom vsdeblur.cli import main\ntry:\n    main(['batch', *sys.argv[1:], '--plan-only'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    run_without_torch(code, str(sliding_noise_clip(tmp_path / "a.mp4", 6)), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights))
    assert (tmp_path / "out" / ".vsdeblur" / "manifest.sqlite").is_file()


def test_the_shim_signature_is_written_without_torch(tmp_path):
    header = tmp_path / "atrous_args.h"
    # as CMake runs it: the script's own arguments in sys.argv
    run_without_torch("import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')",
                      str(REPO / "plugin" / "gen_args.py"), str(header))
    assert header.read_text().startswith('#define ATROUS_ARGS "clip:vnode;weights:data:opt;')


def test_an_unknown_name_is_an_attribute_error():
    import vsdeblur

    with pytest.raises(AttributeError, match="'Unknown'"):
        vsdeblur.Unknown  # noqa: B018
