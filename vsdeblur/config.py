"""One schema for every option: defaults, types, bounds and help text live here and nowhere
else. The same Option serves a CLI flag (click), a key in a TOML file (tomllib) and a
VapourSynth argument. Precedence: defaults < TOML file < command-line flags.

The groups: ENGINE, ENCODE, INPUT, BATCH and VAPOURSYNTH (restoring: vsdeblur-stream, batch,
the VapourSynth filter), TRAIN and BLUR (a training recipe), SYNTH (`vsdeblur synth`). Every TOML
file, a job file or a training recipe, is read by `load_toml` (and `resolve`, which adds the
defaults and flags).

This module imports only the standard library and click, so that tools which only need the
schema (the build of the VapourSynth shim, --help) stay fast.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import click

from vsdeblur.errors import UsageError
from vsdeblur.runtimes import BACKENDS, PRECISIONS


@dataclass(frozen=True)
class Option:
    name: str  # snake_case: the TOML key and Python keyword; the flag is --kebab-case
    type: type  # int, float, str, bool, Path, or list: an array of tables ([[name]]), each kept as given
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False  # None is a valid value (meaning "automatic")
    # a value with a syntax of its own (any type in, the canonical value out; ValueError says
    # what is wrong): replaces the type, choices and bounds checks
    convert: Callable[[Any], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any, where: str) -> Any:
        """Check and convert one value; `where` names its origin in the error message."""
        if value is None and (self.nullable or self.default is None):
            return None
        if self.type is list:
            return self._tables(value, where)
        if self.convert is not None:
            try:
                return self.convert(value)
            except ValueError as exc:
                raise UsageError(f"{where}: {self.name} {exc}") from None
        expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}[self.type]
        if self.type is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
            value = float(value)
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        elif not isinstance(value, (str, Path)):
            raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        else:
            value = self.type(value)
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{where}: {self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{where}: {self.name} must be at least {self.minimum}; got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise UsageError(f"{where}: {self.name} must be at most {self.maximum}; got {value!r}")
        return value

    def _tables(self, value: Any, where: str) -> list[dict]:
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise UsageError(f"{where}: {self.name} entries must be tables ([[{self.name}]])")
        for entry in value:
            if not isinstance(entry.get("path", ""), str):
                raise UsageError(f"{where}: path in [[{self.name}]] must be a string, not {entry['path']!r}")
        return [dict(entry) for entry in value]


@dataclass(frozen=True)
class Group:
    """Options that belong together; a TOML file may hold them at top level or in [name]
    (only in [name] when `table_only`)."""

    name: str
    options: tuple[Option, ...]
    table_only: bool = False

    def __getitem__(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def pick(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """This group's entries of resolved option values."""
        return {o.name: values[o.name] for o in self.options}


def load_toml(path: str | Path, groups: Iterable[Group], absolute_paths: bool = False) -> dict[str, Any]:
    """Read a TOML file and check every key against the groups; unknown keys are errors.

    A relative path in the file is taken from the file's folder, so that a file means the same
    files from whichever folder it is used (`absolute_paths`: also resolved to an absolute
    path). A file may name a `base` file (a path from its folder): it means that file with the
    keys given here replaced, [table] keys one by one, arrays of tables ([[name]]) whole."""
    return _load(Path(path), list(groups), absolute_paths, ())


def _load(path: Path, groups: list[Group], absolute_paths: bool, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        raise UsageError(f"{path}: base recipes form a loop")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    base = data.pop("base", None)
    values = check_keys(data, groups, str(path), path.parent, absolute_paths)
    if base is None:
        return values
    if not isinstance(base, str):
        raise UsageError(f"{path}: base must be the file name of another recipe, not {base!r}")
    return _load(_from_folder(Path(base), path.parent, absolute_paths), groups, absolute_paths, chain + (path.resolve(),)) | values


def _from_folder(path: Path, folder: Path, absolute: bool) -> Path:
    """A path written in a file in `folder`; an absolute or ~ path stays as it is."""
    path = folder / path.expanduser()
    return path.resolve() if absolute else path


def check_keys(data: Mapping[str, Any], groups: list[Group], where: str, folder: Path | None = None,
               absolute_paths: bool = False) -> dict[str, Any]:
    """Flatten [group] tables and parse every value; unknown keys and tables are errors. A
    relative path (a Path option, or `path` in an array of tables) is taken from `folder`."""
    top_level = {o.name: o for g in groups if not g.table_only for o in g.options}
    tables = {g.name: g for g in groups}
    values: dict[str, Any] = {}

    def take(key: str, value: Any, group: Group | None) -> None:
        allowed = {o.name: o for o in group.options} if group else top_level
        option = allowed.get(key)
        if option is None:
            scope = f"[{group.name}]" if group else "the top level"
            raise UsageError(f"{where}: unknown key {key!r} in {scope}; known keys: {', '.join(allowed)}")
        if key in values:
            raise UsageError(f"{where}: {key!r} is given twice")
        values[key] = option.parse(value, where)
        if folder is not None:
            values[key] = _paths_from(values[key], folder, absolute_paths)

    for key, value in data.items():
        if isinstance(value, dict) and key in tables:
            for sub_key, sub_value in value.items():
                take(sub_key, sub_value, tables[key])
        elif key in tables and key not in top_level:
            raise UsageError(f"{where}: [{key}] must be a table")
        else:
            take(key, value, None)
    return values


def _paths_from(value: Any, folder: Path, absolute: bool) -> Any:
    if isinstance(value, Path):
        return _from_folder(value, folder, absolute)
    if isinstance(value, list):
        return [entry | {"path": str(_from_folder(Path(entry["path"]), folder, absolute))} if "path" in entry else entry
                for entry in value]
    return value


def resolve(groups: Iterable[Group], config: str | Path | None, flags: Mapping[str, Any], absolute_paths: bool = False) -> dict[str, Any]:
    """Defaults, overridden by the TOML file, overridden by the flags that were given (not None)."""
    groups = list(groups)
    values = {k: v for g in groups for k, v in g.defaults().items()}
    if config is not None:
        values.update(load_toml(config, groups, absolute_paths))
    by_name = {o.name: o for g in groups for o in g.options}
    values.update({k: by_name[k].parse(v, "command line") for k, v in flags.items() if v is not None and k in by_name})
    return values


def click_options(*groups: Group) -> Callable:
    """Decorate a click command with one flag per option. Flags default to None so that
    `resolve` can tell a flag that was given from one that was not."""

    def decorate(command: Callable) -> Callable:
        for group in reversed(groups):
            for option in reversed(group.options):
                shown = "auto" if option.default is None else option.default
                help_text = f"{option.help} [default: {shown}]"
                if option.type is bool:
                    name = option.name.replace("_", "-")
                    decl = click.option(f"--{name}/--no-{name}", option.name, default=None, help=help_text)
                else:
                    kind = click.Choice([str(c) for c in option.choices]) if option.choices and option.type is str else option.type
                    kind = click.Path(path_type=Path) if option.type is Path else kind
                    decl = click.option(option.flag, option.name, type=kind, default=None, help=help_text)
                command = decl(command)
        return command

    return decorate


def shutter(value: Any) -> float | str:
    """The `shutter` option: "auto", the share of the frame interval the shutter is open, in
    (0, 1], or that share as a shutter angle, "180deg" = 0.5."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.endswith("deg"):
            try:
                angle = float(text.removesuffix("deg"))
            except ValueError:
                raise ValueError(f"angle must be a number of degrees such as 180deg; got {value!r}") from None
            if not 0 < angle <= 360:
                raise ValueError(f"angle must lie in (0, 360] degrees; got {value!r}")
            return angle / 360
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be auto, a share of the frame interval in (0, 1] or an angle such as 180deg; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be auto, a share of the frame interval in (0, 1] or an angle such as 180deg; got {value!r}")
    if not 0 < value <= 1:  # also refuses NaN
        raise ValueError(f"must lie in (0, 1] (the share of the frame interval the shutter is open); got {value!r}")
    return float(value)


ENGINE = Group(
    "engine",
    (
        Option("weights", Path, None, "weights file (.safetensors); default: the model shipped with vsdeblur"),
        Option("preset", str, None, "model preset the weights must match; default: read from the weights file"),
        Option("stage", int, None, "1: per-frame deblurring; 2: refined from neighbouring frames; default: the highest the weights hold", choices=(1, 2)),
        Option("radius", int, None, "temporal radius of stage 2 (window of 2r+1 frames); fixed by the weights, default: theirs", minimum=1, maximum=8),
        Option("device", str, "auto", "auto, cpu, cuda or cuda:N"),
        Option("precision", str, "auto", "compute precision (auto: fp16 on CUDA; bf16 on CPUs with AMX-BF16 or AVX512-BF16, else fp32)", choices=("auto", *PRECISIONS)),
        Option("tile", int, None, "tile side in pixels (0: never tile); default: chosen from free memory", minimum=0),
        Option("overlap", int, None, "tile overlap in pixels; default: the preset's", minimum=0),
        Option("ensemble", bool, False, "average the 8 flips and rotations of each frame (8x slower)"),
        Option("scene_threshold", float, 0.25, "scene-cut threshold: mean luma change (0..1) that starts a new scene; 0 disables", minimum=0.0, maximum=1.0),
        Option("compile", bool, False, "torch.compile the networks (CUDA; pays off on long clips)"),
        Option("shutter", str, "auto", "share of the frame interval the shutter is open, for models that read the motion prior: a number in (0, 1], an angle such as 180deg (= 0.5), or auto: estimated per frame from its own blur along its motion", convert=shutter),
        Option("backend", str, "torch", "network runtime: torch; onnxruntime or openvino (CPU), tensorrt (NVIDIA GPU), each running vsdeblur export's graphs, exported and cached on first use; auto: the fastest installed for the device", choices=("auto", *BACKENDS)),
    ),
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The frozen, checked values of one option group: a subclass names the group in `GROUP`
    and gets one field per option (see `settings_of`). Making one checks every value against
    its option, so a value that exists is valid."""

    GROUP: ClassVar[Group]
    WHERE: ClassVar[str]  # names the origin of a bad value in its error message

    def __post_init__(self) -> None:
        for option in self.GROUP.options:
            object.__setattr__(self, option.name, option.parse(getattr(self, option.name), self.WHERE))

    @classmethod
    def of(cls, values: Mapping[str, Any], where: str | None = None) -> Self:
        """The group's entries of option values (other groups' keys are ignored, missing ones
        take their defaults); `where` names their origin in an error message."""
        return cls(**{o.name: o.parse(values[o.name], where or cls.WHERE) for o in cls.GROUP.options if o.name in values})

    @classmethod
    def checked(cls, options: Mapping[str, Any], where: str) -> Self:
        """Settings from keyword options as a caller wrote them: an unknown name is an error
        too."""
        names = [o.name for o in cls.GROUP.options]
        unknown = [k for k in options if k not in names]
        if unknown:
            raise UsageError(f"{where}: unknown option {unknown[0]!r}; known options: {', '.join(names)}")
        return cls.of(options, where)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name) for o in self.GROUP.options}


def settings_of(group: Group, name: str, doc: str) -> type[Settings]:
    """A Settings subclass with one field per option of `group`, defaulting to the option's
    default: the options are written once, in the group."""
    fields = [(o.name, Any, dataclasses.field(default=o.default)) for o in group.options]
    namespace = {"__doc__": doc, "GROUP": group, "WHERE": name}
    return dataclasses.make_dataclass(name, fields, bases=(Settings,), frozen=True, kw_only=True, namespace=namespace)


EngineSettings = settings_of(ENGINE, "EngineSettings", "The engine's options (ENGINE), checked: what Deblurrer, the VapourSynth filter, vsdeblur-stream, batch and bench build an engine from.")


ENCODE = Group(
    "encode",
    (
        Option("codec", str, None, "video encoder (libx264, libx265, ffv1, libsvtav1, ...); default: libx264 for 8-bit sources, libx265 for deeper ones"),
        Option("crf", int, None, "constant rate factor (lower is better); default: 16 for libx264, 18 for libx265, the encoder's own otherwise", minimum=0, maximum=63),
        Option("lossless", bool, None, "encode losslessly (x264 qp=0, x265 lossless=1; FFV1 always is); default: when the source is lossless (FFV1, PNG, lossless H.264, ...) and no CRF is given"),
        Option("pix_fmt", str, None, "output pixel format, e.g. yuv420p10le; default: the source's, if the encoder takes it"),
        Option("encoder_preset", str, None, "encoder speed preset (x264/x265: ultrafast ... placebo); default: the encoder's"),
        Option("encoder_options", str, None, "more encoder options, space-separated key=value pairs, e.g. 'tune=film x265-params=aq-mode=3'"),
        Option("format", str, None, "container format (matroska, mp4, mov, nut, ...); default: from OUTPUT's extension, matroska for '-'"),
        Option("drop_incompatible", bool, False, "leave out the streams the output container cannot hold instead of failing"),
    ),
)


# How vsdeblur-stream reads its INPUT.
INPUT = Group(
    "input",
    (
        Option("network_timeout", float, 30.0, "seconds a network INPUT (a URL) may send nothing, while it is opened or later, "
               "before the run stops with an error; 0: wait for ever", minimum=0.0),
    ),
)


BATCH = Group(
    "batch",
    (
        Option("executor", str, "local", "local: worker processes on this machine; ray: one Ray task per chunk", choices=("local", "ray")),
        Option("ray_address", str, None, "Ray cluster to join (ray://host:10001 or auto); default: start a local one"),
        Option("chunk_frames", int, 300, "frames per chunk (boundaries move to a nearby keyframe when one is close)", minimum=1),
        Option("workers", int, None, "parallel chunk workers; default: one per GPU, else one per 4 CPU cores", minimum=1),
        Option(
            "name_template",
            str,
            "{dir}/{stem}.mkv",
            "output path below the output root; fields {dir} (input's folder relative to its root), {stem}, {name}, {ext}",
        ),
    ),
)


# Options that only the VapourSynth filter has (core.deblur.Atrous / vsdeblur.atrous).
VAPOURSYNTH = Group(
    "vapoursynth",
    (
        Option("num_streams", int, 1, "frames in flight at once (CUDA: one stream each); more overlaps copies with compute", minimum=1, maximum=16),
        Option("scene_props", bool, True, "honour the _SceneChangePrev/_SceneChangeNext frame props: no window crosses a cut"),
        # the _Matrix values core.resize converts with; 10 and 12-14 also need _Transfer/_Primaries props
        Option("matrix", int, None, "YUV input: matrix coefficients (VapourSynth _Matrix value) when the clip has no _Matrix prop", choices=(1, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14)),
        Option("color_range", str, None, "integer YUV/GRAY input: full or limited, when the clip has no _Range (_ColorRange) prop", choices=("full", "limited")),
    ),
)

# Python type -> VapourSynth argument type; Path travels as a string (data).
_VS_TYPES = {int: "int", float: "float", str: "data", bool: "int", Path: "data"}


def vapoursynth_args(*groups: Group) -> str:
    """The argument string of core.deblur.Atrous: the clip, then every option, all optional
    (an omitted argument takes the schema default on the Python side). The C shim is built
    with this string, so the plugin's signature cannot drift from the schema."""
    return "clip:vnode;" + "".join(f"{o.name}:{_VS_TYPES[o.type]}:opt;" for g in groups for o in g.options)


# A training recipe (`vsdeblur train --config`): TRAIN at top level, BLUR in [blur].
TRAIN = Group(
    "train",
    (
        Option("stage", int, 1, "which network to train", choices=(1, 2)),
        Option("preset", str, "small", "model preset"),
        Option("output", Path, Path("runs/train"), "directory for checkpoints, log and weights"),
        Option("steps", int, 2_500_000, "optimiser steps in total (the paper: about 2.5 M)", minimum=1),
        Option("batch", int, None, "crops per step (paper: 1 for stage 1, 2 for stage 2)", minimum=1),
        Option("crop", int, 320, "crop side in pixels (a multiple of 16)", minimum=32),
        Option("lr", float, 1e-4, "Adam learning rate", minimum=0.0),
        Option("lr_factor", float, 0.1, "learning-rate factor when validation stalls", minimum=0.0, maximum=1.0),
        Option("patience", int, 4, "validations without a new best PSNR before the rate drops", minimum=1),
        Option("min_lr", float, 1e-6, "the rate never drops below this", minimum=0.0),
        Option("decay_start", int, None, "from this step on, the rate falls linearly from lr to min_lr at the last step (a fixed budget; plateau drops stop)", minimum=0),
        Option("seed", int, 0, "seed of every random draw"),
        Option("validate_every", int, 1000, "steps between validations", minimum=1),
        Option("checkpoint_every", int, 1000, "steps between checkpoints", minimum=1),
        Option("keep_every", int, None, "also export the model every N steps as weights-STEP.safetensors: candidates for checks on real footage, since validation picks between close ones noisily", minimum=1),
        Option("log_every", int, 50, "steps between progress lines", minimum=1),
        Option("threads", int, 0, "CPU threads for torch (0: torch's default)", minimum=0),
        Option("workers", int, 1, "processes drawing and blurring batches ahead of the optimiser (0: in the training process itself; a GPU needs many)", minimum=0),
        Option("device", str, "auto", "auto, cpu, cuda or cuda:N"),
        Option("precision", str, "auto", "autocast precision of the networks: auto (bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32), fp32 or bf16; weights, optimiser and loss stay fp32", choices=("auto", "fp32", "bf16")),
        Option("stage1_weights", Path, None, "stage 2 only: the trained stage-1 weights it refines"),
        Option("radius", int, None, "stage 2 only: temporal radius (window of 2r+1 frames); default: the preset's", minimum=1, maximum=8),
        Option("init_weights", Path, None, "weights to start the trained stage from instead of random (a stage 2 of a smaller radius is widened: the added frames start with no say)"),
        Option("prior", bool, False, "stage 1 only: the stage reads the motion prior (the neighbours' motion, the shutter, a deconvolution); a blind init_weights is widened with zero weights on it"),
        Option("padding", str, None, "stage 1 only: how its convolutions see beyond the frame, if not as the preset says: reflect (mirrored, the paper's) or zeros (the convolution's own; no padding kernel, channels_last throughout on a GPU); init_weights padded the other way start from their weights", choices=("reflect", "zeros")),
        Option("prior_view", int, 256, "prior: samples are filmed at this side and their motion measured over it, then cropped to crop", minimum=64),
        Option("blind_probability", float, 0.1, "prior: share of samples given no neighbours (single pictures, frames between cuts)", minimum=0.0, maximum=1.0),
        Option("prior_bank", Path, None, "prior: train on crops of the samples in this folder (made once by pipelines/train/prior_bank.py from this recipe) instead of filming new ones every step; auto: film them"),
        Option("true_shutter_probability", float, 0.5, "prior: share of camera-filmed samples given their true shutter; the rest get the engine's auto estimate", minimum=0.0, maximum=1.0),
        Option("val_frames", int, 8, "consecutive frames taken from each validation video", minimum=1),
        Option("val_max_side", int, 1280, "validation frames are downscaled to at most this side", minimum=64),
        Option("train_data", list, (), "training sources mixed by their weights: [[train_data]] tables of kind, path, weight, ... (docs/training.md)"),
        Option("val_data", list, (), "held-out validation sources: [[val_data]] tables like those of train_data"),
    ),
)

# The blur synthesised on sharp training material. The defaults are those of the dataclasses
# that draw it (blur.ShakeSpec, ExtrasSpec and CameraSpec, train.data.BlurRecipe,
# which import torch); tests/test_config.py holds the two to each other.
BLUR = Group(
    "blur",
    (
        Option("min_length", float, 2.0, "shortest camera-shake path, pixels", minimum=0.0),
        Option("max_length", float, 24.0, "longest camera-shake path, pixels", minimum=0.0),
        Option("max_curvature", float, 1.0, "0: straight paths .. 1: curved, jerky", minimum=0.0),
        Option("kernel_size", int, 33, "kernel side (odd)", minimum=3),
        Option("log_lengths", bool, False, "draw shake lengths log-uniformly (every octave equally likely: more mild blur) instead of uniformly"),
        Option("max_noise", float, 0.012, "largest read-noise std (0..1 scale)", minimum=0.0),
        Option("compress_probability", float, 0.5, "share of inputs sent through JPEG", minimum=0.0, maximum=1.0),
        Option("subframe_probability", float, 0.2, "share blurred along their own global motion", minimum=0.0, maximum=1.0),
        Option("sharp_probability", float, 0.03, "share left sharp", minimum=0.0, maximum=1.0),
        Option("gamma_probability", float, 0.3, "share blurred on code values, not linear light", minimum=0.0, maximum=1.0),
        Option("soft_probability", float, 0.0, "share whose sharp reference is first put partly out of focus (soft content is not motion blur)", minimum=0.0, maximum=1.0),
        Option("reference_extras_probability", float, 0.0, "share whose sharp reference already carries noise and compression, as real video frames do", minimum=0.0, maximum=1.0),
        Option("camera_probability", float, 0.0, "share filmed by a camera moving along a continuous path, integrated over the exposure (lengths: min_length..max_length per exposure, log_lengths)", minimum=0.0, maximum=1.0),
        Option("wobble", float, 1.0, "camera path: handheld wobble's speed relative to the drift's, at most", minimum=0.0),
        Option("max_roll", float, 0.3, "camera path: roll per exposure, degrees, at most", minimum=0.0),
        Option("max_zoom", float, 0.01, "camera path: relative zoom per exposure, at most", minimum=0.0),
        Option("min_shutter", float, 0.5, "camera path: shortest exposure, share of the frame interval", minimum=0.01, maximum=1.0),
        Option("max_shutter", float, 1.0, "camera path: longest exposure, share of the frame interval", minimum=0.01, maximum=1.0),
        Option("jerk_probability", float, 0.05, "camera path: chance per frame of a sudden change of direction", minimum=0.0, maximum=1.0),
    ),
    table_only=True,
)

# `vsdeblur synth` draws kernels from the training recipe's own shake options
SYNTH = Group(
    "synth",
    (
        BLUR["min_length"], BLUR["max_length"], BLUR["max_curvature"], BLUR["kernel_size"],
        Option("noise", float, 0.0, "largest read-noise std added after the blur (0..1 scale)", minimum=0.0, maximum=0.2),
        Option("linear", bool, True, "blur in linear light, as a sensor integrates (--no-linear: on code values)"),
        Option("seed", int, 0, "seed of the per-frame kernels: the same seed blurs a clip the same way"),
    ),
)


# `vsdeblur bench`: what to measure. The engine measured takes the ENGINE options, except that
# --precision and --backend may list several to compare (BENCH_ENGINE).
BENCH = Group(
    "bench",
    (
        Option("size", str, "640x360", "frame size WIDTHxHEIGHT of the synthetic frames"),
        Option("clip", Path, None, "measure on the first --frames frames of this video (at its size, or scaled to --size where given) instead of synthetic frames; auto: synthetic frames"),
        Option("frames", int, 8, "frames per measurement", minimum=1),
        Option("rounds", int, 3, "interleaved repetitions; medians are reported", minimum=1),
        Option("vapoursynth", bool, False, "also time the core.deblur.Atrous graph (VapourSynth) on the same frames"),
        VAPOURSYNTH["num_streams"],
        Option("prior", bool, False, "also time the motion prior a stage 1 that reads it is given (motion, auto shutter, deconvolution), as the engine makes it along a stream, against the engine's time; on --clip frames (synthetic frames do not move)"),
        Option("stream", bool, False, "also time vsdeblur-stream (decode + engine + encode) against the engine alone on the same decoded frames"),
        Option("batch", bool, False, "also time vsdeblur batch (local and Ray executors) against vsdeblur-stream on one short file after another"),
        Option("batch_files", int, 4, "--batch: files of --frames frames each", minimum=1),
        Option("suite", str, None, "run a fixed set of measurements instead: gpu, the GPU check of docs/performance.md (on a CPU at reduced sizes); auto: none", choices=("gpu",)),
        Option("json", Path, None, "also write the results as JSON to this file; auto: none"),
    ),
)

BENCH_ENGINE = Group(
    "engine",
    tuple(
        Option(o.name, o.type, o.default, f"{o.help}; a comma-separated list (e.g. {example}) times each and compares each with the last: "
               "throughput and output PSNR (the other measurements use the first); with lists of both, every pair")
        if example else o
        for o, example in ((o, {"precision": "auto,fp32", "backend": "openvino,torch"}.get(o.name)) for o in ENGINE.options)
    ),
)
