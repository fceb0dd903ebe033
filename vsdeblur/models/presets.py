"""Model presets: the same two networks at different sizes. Presets are data, not code.

`paper` is the network of Brehm, Scherer & Lienhart (CVPRW 2020) at its published size.
`small` is the size the project trains and ships: it runs on a CPU at a few seconds per 720p
frame. `tiny` exists for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vsdeblur.errors import UsageError


@dataclass(frozen=True)
class Stage1Config:
    """The atrous network (architecture.md, stage 1)."""

    head_kernel: int = 9  # the paper's 9x9; the authors' code uses 7
    head_width: int = 64
    down_width: int = 128
    block_width: int = 256  # each of the four atrous branches has block_width // 2 filters
    blocks: int = 20
    rates: tuple[int, ...] = (1, 2, 3, 4)
    up_width: int = 128
    tail_width: int = 64
    downsample: bool = True  # False: the paper's "future work", full resolution throughout


@dataclass(frozen=True)
class Stage2Config:
    """Multi-level feature aggregation (architecture.md, stage 2)."""

    radius: int = 1  # window of 2 * radius + 1 frames
    head_kernel: int = 7
    head_width: int = 64
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)  # at 1/2, 1/4, 1/8, 1/16
    decoder_widths: tuple[int, ...] = (512, 256, 128, 64)  # at 1/16 ... 1/2 (coarse to fine)
    res_blocks: int = 3


@dataclass(frozen=True)
class Preset:
    name: str
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    overlap: int = 128  # default tile overlap in pixels (see engine.tiling)

    def multiple(self, stage: int) -> int:
        """Frame sides must be a multiple of this for the given stage."""
        if stage == 2:
            return 2 ** len(self.stage2.encoder_widths)
        return 2 if self.stage1.downsample else 1

    def with_radius(self, radius: int) -> Preset:
        """The same networks with stage 2 over a window of 2 * radius + 1 frames."""
        return dataclasses.replace(self, stage2=dataclasses.replace(self.stage2, radius=radius))

    def differences(self, expected: Preset) -> list[str]:
        """What in this preset differs from `expected`, one 'field value (expected value)' each."""
        def walk(have: dict, want: dict, prefix: str) -> list[str]:
            found = []
            for key, value in want.items():
                if isinstance(value, dict):
                    found += walk(have[key], value, f"{prefix}{key}.")
                elif have[key] != value:
                    found.append(f"{prefix}{key} {have[key]!r} (expected {value!r})")
            return found

        return walk(self.to_dict(), expected.to_dict(), "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preset:
        def tuples(d: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        try:
            return cls(
                name=data["name"],
                stage1=Stage1Config(**tuples(data["stage1"])),
                stage2=Stage2Config(**tuples(data["stage2"])),
                overlap=data.get("overlap", 128),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"invalid preset description: {exc}") from None


SMALL_STAGE2 = Stage2Config(head_width=16, encoder_widths=(16, 32, 64, 128), decoder_widths=(128, 64, 32, 16), res_blocks=1)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("paper"),
        Preset(
            "small",
            Stage1Config(head_width=16, down_width=32, block_width=32, blocks=6, up_width=24, tail_width=16),
            SMALL_STAGE2,
            overlap=64,
        ),
        Preset(
            "medium",  # small's stage 2 behind a stage 1 five times its cost: the deconvolution is stage 1's job
            Stage1Config(head_width=32, down_width=64, block_width=64, blocks=8, up_width=48, tail_width=32),
            SMALL_STAGE2,
            overlap=64,
        ),
        Preset(
            "tiny",
            Stage1Config(head_kernel=3, head_width=4, down_width=8, block_width=8, blocks=2, up_width=8, tail_width=4),
            Stage2Config(
                head_kernel=3,
                head_width=4,
                encoder_widths=(4, 8, 8, 8),
                decoder_widths=(8, 8, 8, 4),
                res_blocks=1,
            ),
            overlap=64,
        ),
    )
}

DEFAULT_PRESET = "small"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
