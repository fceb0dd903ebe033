"""Shared fixtures: untrained tiny-preset weights files (real files in the real format) and the
bundled sample clip. Everything runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vsdeblur.models import build_model, get_preset
from vsdeblur.weights import save_weights

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CLIP = REPO / "vsdeblur" / "data" / "bigbuckbunny.mp4"


def make_weights(path: Path, preset: str = "tiny", stages: tuple[int, ...] = (1, 2), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = get_preset(preset)
    return save_weights(path, cfg, {s: build_model(cfg, s) for s in stages}, recipe={"note": "untrained, for tests"})


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
