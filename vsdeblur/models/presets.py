"""Model presets: the same two networks at different sizes. Presets are data, not code.

`paper` is the network of Brehm, Scherer & Lienhart (CVPRW 2020) at its published size.
`small` is the size the project trains and ships: it runs on a CPU at a few seconds per 720p
frame. `tiny` exists for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vsdeblur.errors import UsageError

# How a convolution sees beyond the picture's edge: mirrored (the paper's, and the shipped
# model's), or the convolution's own zeros, which needs no padding kernel of its own: on a GPU
# the mirroring and the layout changes around it took more time than the convolutions
# (docs/performance.md). A network learns with the one it is trained with.
PADDINGS = ("reflect", "zeros")


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
    prior: bool = False  # also reads the motion prior (stage1.PRIOR_CHANNELS) beside the blurred frame
    padding: str = "reflect"  # one of PADDINGS


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
class Bound:
    """What a preset value may be: an integer (or a tuple of `length` integers) from `low` to
    `high`, odd where `odd`; or, with `flag`, true or false."""

    low: int = 1
    high: int = 4096
    odd: bool = False
    length: tuple[int, int] | None = None  # a tuple of this many values, fewest and most
    flag: bool = False
    choices: tuple[str, ...] | None = None  # a word, one of these

    def broken_by(self, value: object) -> bool:
        if self.flag:
            return not isinstance(value, bool)
        if self.choices is not None:
            return value not in self.choices
        if self.length is not None and not (isinstance(value, tuple) and self.length[0] <= len(value) <= self.length[1]):
            return True
        values = value if self.length is not None else (value,)
        return not all(type(v) is int and self.low <= v <= self.high and (v % 2 or not self.odd) for v in values)

    def describe(self) -> str:
        if self.flag:
            return "true or false"
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        each = f"{'odd integer' if self.odd else 'integer'} from {self.low} to {self.high}"
        return f"an {each}" if self.length is None else f"{self.length[0]} to {self.length[1]} values, each an {each}"


# Far beyond any size trained (the paper's: widths up to 512, 20 blocks), and small enough that a
# network of these sizes can be described (on the meta device, vsdeblur.weights) without memory
# or time to speak of, before a weights file's tensors are checked against it.
STAGE1_BOUNDS = {
    **{key: Bound() for key in ("head_width", "down_width", "up_width", "tail_width")},
    "block_width": Bound(low=2),
    "head_kernel": Bound(high=31, odd=True),
    "blocks": Bound(high=256),
    "rates": Bound(high=64, length=(1, 8)),
    "downsample": Bound(flag=True),
    "prior": Bound(flag=True),
    "padding": Bound(choices=PADDINGS),
}
STAGE2_BOUNDS = {
    "radius": Bound(low=0, high=16),
    "head_kernel": Bound(high=31, odd=True),
    "head_width": Bound(),
    "encoder_widths": Bound(length=(1, 8)),
    "decoder_widths": Bound(length=(1, 8)),
    "res_blocks": Bound(high=64),
}
OVERLAP_BOUND = Bound(low=0)


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
        """The preset a description (a weights header, an exported graph's) names, refused with
        one line when a value lies outside its bounds: a description read from a file is not
        trusted."""
        def tuples(d: dict) -> dict:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        if not isinstance(data, dict) or not all(isinstance(data.get(part), dict) for part in ("stage1", "stage2")):
            raise UsageError("invalid preset description: expected a name and the settings of stage1 and stage2")
        try:
            preset = cls(
                name=data["name"],
                stage1=Stage1Config(**tuples(data["stage1"])),
                stage2=Stage2Config(**tuples(data["stage2"])),
                overlap=data.get("overlap", 128),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"invalid preset description: {exc}") from None
        problem = preset.out_of_bounds()
        if problem:
            raise UsageError(f"invalid preset description: {problem}")
        return preset

    def out_of_bounds(self) -> str | None:
        """The first value of this preset outside its bounds, described; None when all are inside."""
        if not isinstance(self.name, str) or not self.name:
            return f"name is {self.name!r}, expected a name"
        for part, bounds in (("stage1", STAGE1_BOUNDS), ("stage2", STAGE2_BOUNDS), ("", {"overlap": OVERLAP_BOUND})):
            for key, bound in bounds.items():
                value = getattr(getattr(self, part) if part else self, key)
                if bound.broken_by(value):
                    return f"{part}{'.' if part else ''}{key} is {list(value) if isinstance(value, tuple) else value!r}, expected {bound.describe()}"
        encoder, decoder = self.stage2.encoder_widths, self.stage2.decoder_widths
        if len(encoder) != len(decoder):
            return f"stage2 has {len(encoder)} encoder widths and {len(decoder)} decoder widths, expected as many of each"
        return None



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
