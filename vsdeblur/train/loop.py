"""`vsdeblur train`: the paper's recipe for either stage, resumable and deterministic.

Recipe (architecture.md): L1 loss in RGB against the sharp frame t, Adam (beta 0.9, 0.999),
random crops, small colour changes, flips and rotations, learning rate divided by ten when
validation PSNR stalls. Stage 2 learns on stage-1 outputs of neighbouring frames, with the
stage-1 network frozen, as the paper trains the stages separately.

Determinism: the batch of step s is drawn from a generator seeded with (seed, s), so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from vsdeblur.config import BLUR, TRAIN, resolve
from vsdeblur.errors import UsageError
from vsdeblur.models import Preset, build_model, get_preset
from vsdeblur.blur import camera, synth
from vsdeblur.train import prior
from vsdeblur.train.data import BlurRecipe, Mixture, make_source
from vsdeblur.train.validate import ValidationSet
from vsdeblur.weights import read_weights, save_weights

PRIOR_STREAM = 104729  # keys the generator of a step's prior draws apart from its samples' (seed, step, i)
CHECKPOINT_NAME = "checkpoint.safetensors"
WEIGHTS_NAME = "weights.safetensors"  # the best validation
FINAL_NAME = "final.safetensors"  # the last step: the best validation is not always the model to use


@dataclass
class TrainConfig:
    values: dict[str, Any]
    blur: dict[str, Any]
    train_data: list[dict]
    val_data: list[dict]
    source: Path | None = None  # the recipe file, resolved: recorded paths are relative to its folder

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def recipe(self) -> BlurRecipe:
        b = self.blur
        return BlurRecipe(
            shake=synth.ShakeSpec(b["min_length"], b["max_length"], b["max_curvature"], b["kernel_size"], b["log_lengths"]),
            extras=synth.ExtrasSpec(b["max_noise"], b["compress_probability"]),
            subframe_probability=b["subframe_probability"],
            sharp_probability=b["sharp_probability"],
            gamma_probability=b["gamma_probability"],
            soft_probability=b["soft_probability"],
            reference_extras_probability=b["reference_extras_probability"],
            camera=camera.CameraSpec(b["min_length"], b["max_length"], b["log_lengths"], b["wobble"], b["max_roll"],
                                     b["max_zoom"], b["min_shutter"], b["max_shutter"], b["jerk_probability"]),
            camera_probability=b["camera_probability"],
        )

    def model_preset(self) -> Preset:
        """The preset trained, its stage-2 window the recipe's radius where one is given, its
        stage 1 reading the motion prior where the recipe says `prior` and padding as it says."""
        preset = get_preset(self.values["preset"])
        if self.prior:
            preset = dataclasses.replace(preset, stage1=dataclasses.replace(preset.stage1, prior=True))
        if self.padding is not None:
            preset = dataclasses.replace(preset, stage1=dataclasses.replace(preset.stage1, padding=self.padding))
        return preset if self.radius is None else preset.with_radius(self.radius)

    def frames(self) -> int:
        """Frames in each training sample: one for stage 1 (three with the prior: its
        neighbours tell the motion), stage 2's window."""
        if self.stage == 1:
            return prior.FRAMES if self.prior else 1
        return 2 * self.model_preset().stage2.radius + 1

    def prior_recipe(self) -> prior.PriorRecipe | None:
        if not self.prior:
            return None
        return prior.PriorRecipe(self.prior_view, self.blind_probability, self.true_shutter_probability, self.prior_bank)

    def mixture(self) -> Mixture:
        """The training sources, mixed by their weights, blurred by the recipe."""
        return Mixture([(make_source(s), float(s.get("weight", 1.0))) for s in self.train_data], self.recipe())

    def describe(self) -> dict:
        """The recipe recorded in every checkpoint and weights file. Its paths are written from
        the recipe file's folder, as the recipe itself writes them: a file that is passed on
        (the shipped default) names no folder of the machine that trained it."""
        def sources(entries: list[dict]) -> list[dict]:
            return [entry | {"path": self.portable(entry["path"])} if "path" in entry else entry for entry in entries]

        return {"recipe_file": None if self.source is None else self.source.name,
                "train": {k: self.portable(v) if isinstance(v, Path) else v for k, v in self.values.items()}, "blur": self.blur,
                "train_data": sources(self.train_data), "val_data": sources(self.val_data)}

    def portable(self, path: str | Path) -> str:
        """`path` from the recipe file's folder (a path given on the command line is taken from
        the working directory first); only its name where the two share nothing but the root."""
        path = Path(path).expanduser().resolve()
        folder = None if self.source is None else self.source.parent
        if folder is None or os.path.commonpath([path, folder]) == path.anchor:
            return path.name
        return os.path.relpath(path, folder)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A recipe (and its base recipes) with `overrides` on top; relative paths in files are
    relative to the file, in overrides to the working directory. Paths in files are made
    absolute: every checkpoint and weights file records the recipe, and so which files it used."""
    path = Path(path)
    values = resolve([TRAIN, BLUR], path, overrides or {}, absolute_paths=True)
    if values["batch"] is None:
        values["batch"] = 1 if values["stage"] == 1 else 2
    if values["crop"] % 16:
        raise UsageError(f"{path}: crop must be a multiple of 16; got {values['crop']}")
    if values["prior"] and values["stage"] != 1:
        raise UsageError(f"{path}: prior is a stage-1 input: it needs stage = 1")
    if values["padding"] is not None and values["stage"] != 1:
        raise UsageError(f"{path}: padding is a stage-1 setting: it needs stage = 1")
    if values["prior"] and values["prior_view"] < values["crop"]:
        raise UsageError(f"{path}: prior_view ({values['prior_view']}) must be at least the crop ({values['crop']})")
    if values["stage"] == 2 and values["stage1_weights"] is None:
        raise UsageError(f"{path}: stage 2 trains on stage-1 outputs: set stage1_weights")
    if not values["train_data"]:
        raise UsageError(f"{path}: no [[train_data]] sources")
    get_preset(values["preset"])
    train = TRAIN.pick(values)
    train_data, val_data = list(train.pop("train_data")), list(train.pop("val_data"))
    return TrainConfig(train, BLUR.pick(values), train_data, val_data, path.resolve())


def budget_lr(lr: float, min_lr: float, decay_start: int, steps: int, step: int) -> float:
    """The learning rate of `step` (counted from 0) on a fixed budget: lr until decay_start,
    then a straight line that reaches min_lr where the budget ends, at `steps`. A function of
    the step alone, so resuming is exact."""
    fraction = min(max(step - decay_start, 0) / max(steps - decay_start, 1), 1.0)
    return lr + (min_lr - lr) * fraction


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """B x T x S x S x 3 in [0, 1] -> B x T x 3 x S x S in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).mul(2).sub(1).contiguous()


class StepBatches(torch.utils.data.Dataset):
    """Item s is the batch of training step s as tensors: a pure function of (seed, s), so
    any number of worker processes deliver exactly the batches a single process would.
    (blurred, sharp), B x T x 3 x S x S in [-1, 1]; with a prior recipe (blurred, sharp,
    prior planes), the centre frame alone and B x len(PRIOR_CHANNELS) x S x S planes."""

    def __init__(self, mixture: Mixture, seed: int, batch: int, crop: int, frames: int, prior_recipe: prior.PriorRecipe | None = None) -> None:
        self.mixture, self.seed, self.batch, self.crop, self.frames = mixture, seed, batch, crop, frames
        self.prior_recipe = prior_recipe
        self.bank = prior.Bank(prior_recipe.bank) if prior_recipe is not None and prior_recipe.bank is not None else None

    def __getitem__(self, step: int) -> tuple[torch.Tensor, ...] | UsageError:
        try:
            if self.prior_recipe is not None:
                return self._with_prior(step)
            blurred, sharp = self.mixture.batch(self.seed, step, self.batch, self.crop, self.frames)
        except UsageError as exc:
            # handed back, not raised: a DataLoader wraps what its workers raise in a traceback,
            # and bad training data (an unreadable image) deserves its one-line message
            return exc
        return _to_tensor(blurred), _to_tensor(sharp)

    def _with_prior(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, step, PRIOR_STREAM])
        if self.bank is not None:
            crops = [self.bank.crop(rng, self.crop) for _ in range(self.batch)]
        else:
            samples = self.mixture.samples(self.seed, step, self.batch, self.prior_recipe.view, self.frames)
            crops = [prior.prior_crop(s, rng, self.prior_recipe, self.crop) for s in samples]
        blurred, sharp = (np.stack([c[k] for c in crops])[:, None] for k in (0, 1))
        return _to_tensor(blurred), _to_tensor(sharp), torch.from_numpy(np.stack([c[2] for c in crops]))


# A warnings filter for multiprocessing's resource tracker, which takes its -W options from this
# process when it starts. A run stopped by an error (an unreadable training image) can leave one
# semaphore of the loader's queues registered (rarely, under load), and the tracker would print
# its "leaked semaphore" warnings after the run's one line; it removes the semaphore either way.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def _quiet_worker_end(worker_id: int) -> None:
    """Make a DataLoader worker end without a word when the training stops midway (Ctrl-C,
    SIGTERM, an error), so that the run's one line is all that is printed.

    - The worker leaves with os._exit once its loop is done. Interpreter shutdown stops daemon
      threads where they stand, and the queue's feeder thread may then still be handing a batch
      over inside torch's storage sharing, where the forced thread exit aborts the process
      ("terminate called without an active exception", and torch's traceback in the main
      process). Nothing of the worker's is left to finalise: what it made went to the queue.
    - A main process stopped while it fetched a batch's file descriptors hangs up on the
      worker's resource sharer, which would print that connection error's traceback.
    """

    def leave() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def report(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        if not isinstance(error, (EOFError, ConnectionError)):
            sys.__excepthook__(kind, error, traceback)

    atexit.register(leave)
    sys.excepthook = report


def _inputs(prior: bool) -> str:
    return " reading the motion prior" if prior else ""


def _training_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a run: bf16 where the device computes it natively (its range is
    fp32's, so no loss scaling is needed), else fp32."""
    from vsdeblur.backends.device import auto_precision, torch_dtype

    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else auto_precision(device)[0]
    return torch_dtype(precision)


class Trainer:
    def __init__(self, config: TrainConfig, *, out=sys.stderr) -> None:
        self.config, self.out = config, out
        if config.threads:
            torch.set_num_threads(config.threads)
        from vsdeblur.backends.device import resolve_device

        self.device = resolve_device(config.device)
        self.autocast = _training_precision(config.precision, self.device)
        self.preset = config.model_preset()
        torch.manual_seed(config.seed)
        # channels_last: oneDNN's CPU convolutions run about twice as fast in it (and so do
        # compiled CUDA graphs); numerically it is the same network
        self.memory_format = torch.channels_last
        self.model = self._initial_model().to(self.device, memory_format=self.memory_format)
        self.stage1 = None
        if config.stage == 2:
            self.stage1 = self._trained(config.stage1_weights, 1).to(self.device, memory_format=self.memory_format).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.mixture = config.mixture()
        self.validation = ValidationSet(config.val_data, config.recipe(), seed=config.seed, frames=config.val_frames, max_side=config.val_max_side,
                                        filmed_images=config.prior) if config.val_data else None
        self.output = Path(config.output)
        self.step = 0
        self.lr = config.lr
        self.best_psnr = -math.inf
        self.stale = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0

    def _trained(self, path: Path, stage: int) -> nn.Module:
        weights = read_weights(path)
        differences = weights.preset.with_radius(self.preset.stage2.radius).differences(self.preset)  # the window may differ, nothing else
        if differences:
            raise UsageError(f"{path} does not fit this run's preset {self.preset.name!r}: " + "; ".join(differences))
        return weights.build(stage)

    def _initial_model(self) -> nn.Module:
        c = self.config
        if c.init_weights is None:
            return build_model(self.preset, c.stage)
        if c.stage == 1:
            return self._grown_stage1(c.init_weights).train()
        model = self._trained(c.init_weights, c.stage)
        if c.stage == 2:
            if model.cfg.radius < self.preset.stage2.radius:
                model = model.widened(self.preset.stage2.radius)
            if model.cfg != self.preset.stage2:
                raise UsageError(f"{c.init_weights} holds a stage 2 of radius {model.cfg.radius}: it cannot start one of radius {self.preset.stage2.radius}")
        return model.train()

    def _grown_stage1(self, path: Path) -> nn.Module:
        """The stage 1 of `path`, widened and deepened into this run's preset where it is smaller,
        and made to read the prior where the run does: a larger network, or one with more
        inputs, starts out computing what the trained one does; one padded the other way, the
        same away from the frame's edges."""
        model = read_weights(path).build(1)
        if self.preset.stage1.prior and not model.cfg.prior:
            model = model.with_prior()
        if model.cfg.padding != self.preset.stage1.padding:
            model = model.padded(self.preset.stage1.padding)
        try:
            return model if model.cfg == self.preset.stage1 else model.widened(self.preset.stage1)
        except ValueError:
            return self._trained(path, 1)  # refused, naming what differs

    # ---- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Model, optimiser state and counters in one safetensors file, written atomically."""
        self.output.mkdir(parents=True, exist_ok=True)
        tensors = {f"stage{self.config.stage}.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if self.stage1 is not None:
            tensors.update({f"stage1.{k}": v.detach().cpu().contiguous() for k, v in self.stage1.state_dict().items()})
        optim = self.optimizer.state_dict()
        scalars = {}
        for index, state in optim["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.ndim > 0:
                    tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}.{key}"] = float(value)
        meta = {
            "step": self.step, "lr": self.lr, "best_psnr": self.best_psnr, "stale": self.stale,
            "train_seconds": self.train_seconds, "optim_scalars": scalars, "history": self.history,
            "recipe": self.config.describe(),
        }
        path = self.output / CHECKPOINT_NAME
        tmp = path.with_name(path.name + ".part")
        save_file(tensors, str(tmp), metadata={"checkpoint": json.dumps(meta)})
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        prefix = f"stage{self.config.stage}."
        try:
            self.model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError:
            trained = meta["recipe"]["train"]
            raise UsageError(f"{path} is a checkpoint of stage {trained['stage']} of preset {trained['preset']!r}{_inputs(trained.get('prior', False))}, "
                             f"not of this run's stage {self.config.stage} of {self.preset.name!r}{_inputs(self.config.prior)}: "
                             "resume it with its own recipe or choose another output") from None
        optim = self.optimizer.state_dict()
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value.to(self.device)
        for key, value in meta["optim_scalars"].items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = torch.tensor(value)
        optim["state"] = state
        self.optimizer.load_state_dict(optim)
        self.step, self.lr, self.best_psnr = meta["step"], meta["lr"], meta["best_psnr"]
        self.stale, self.train_seconds, self.history = meta["stale"], meta["train_seconds"], meta["history"]
        self._set_lr(self.lr)

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def export_weights(self, path: Path, scores: dict) -> Path:
        models = {self.config.stage: self.model}
        if self.stage1 is not None:
            models[1] = self.stage1
        info = {
            "steps": self.step, "train_seconds": round(self.train_seconds), "device": self._device_name(),
            "precision": str(self.autocast).removeprefix("torch."),
            **{f"val_{k}": v for k, v in scores.items()},
        }
        return save_weights(path, self.preset, models, recipe=self.config.describe(), info=info)

    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    # ---- the loop -----------------------------------------------------------------------

    def train_step(self, blurred: torch.Tensor, sharp: torch.Tensor, prior_planes: torch.Tensor | None = None) -> float:
        self.model.train()
        blurred, sharp = blurred.to(self.device, non_blocking=True), sharp.to(self.device, non_blocking=True)
        centre = blurred.shape[1] // 2
        frames = [blurred[:, t].contiguous(memory_format=self.memory_format) for t in range(blurred.shape[1])]
        if prior_planes is not None:
            prior_planes = prior_planes.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast != torch.float32):
            if self.config.stage == 1:
                output = self.model(frames[centre], prior_planes)
            else:
                with torch.no_grad():
                    inputs = [self.stage1(f).clamp(-1, 1) for f in frames]
                output = self.model(inputs)
        loss = (output.float() - sharp[:, centre]).abs().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches for steps start..stop-1, drawn ahead in `workers` processes, in step order."""
        c = self.config
        if c.workers and QUIET_TRACKER not in sys.warnoptions:
            sys.warnoptions.append(QUIET_TRACKER)  # before the loader starts the tracker
        loader = torch.utils.data.DataLoader(
            StepBatches(self.mixture, c.seed, c.batch, c.crop, c.frames(), c.prior_recipe()), batch_size=None, sampler=range(start, stop),
            num_workers=c.workers, pin_memory=self.device.type == "cuda", worker_init_fn=_quiet_worker_end,
            # spawned, not forked: a child forked while FFmpeg held a lock in another thread
            # deadlocks in its first JPEG round trip
            multiprocessing_context="spawn" if c.workers else None,
        )
        for item in loader:
            if isinstance(item, UsageError):
                raise item
            yield item

    def validate(self) -> dict:
        scores = self.validation.score(self.preset, self._models_for_engine(), self.device)
        improved = scores["psnr"] > self.best_psnr + 1e-3
        if improved:
            self.best_psnr, self.stale = scores["psnr"], 0
            self.export_weights(self.output / WEIGHTS_NAME, scores)
        else:
            self.stale += 1
            decaying = self.config.decay_start is not None and self.step >= self.config.decay_start
            if self.stale >= self.config.patience and self.lr > self.config.min_lr and not decaying:
                self._set_lr(max(self.lr * self.config.lr_factor, self.config.min_lr))
                self.stale = 0
                self._print(f"validation stalled: learning rate now {self.lr:.2e}")
        return scores | {"best": improved}

    def _models_for_engine(self) -> dict:
        self.model.eval()
        return {1: self.model} if self.config.stage == 1 else {1: self.stage1, 2: self.model}

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    @staticmethod
    def _scores_of(record: dict) -> dict:
        return {k[len("val_"):]: v for k, v in record.items() if k.startswith("val_") and k != "val_best"}

    def run(self, resume: bool = True) -> Path:
        c = self.config
        checkpoint = self.output / CHECKPOINT_NAME
        if checkpoint.exists():
            if not resume:
                raise UsageError(f"{self.output} already holds a training run; resume it or choose another output")
            self.load_checkpoint(checkpoint)
            self._print(f"resumed from {checkpoint} at step {self.step}")
        log = None
        losses: list[float] = []
        started, timed_from = time.monotonic(), self.step
        try:
            for batch in self._batches(self.step, c.steps):
                if log is None:  # opened with the first batch: a run whose data is unreadable leaves nothing behind
                    self.output.mkdir(parents=True, exist_ok=True)
                    log = (self.output / "log.jsonl").open("a", encoding="utf-8")
                if c.decay_start is not None and self.step >= c.decay_start:
                    self._set_lr(budget_lr(c.lr, c.min_lr, c.decay_start, c.steps, self.step))
                t0 = time.monotonic()
                losses.append(self.train_step(*batch))
                self.train_seconds += time.monotonic() - t0
                self.step += 1
                record: dict[str, Any] = {"step": self.step}
                if self.step % c.log_every == 0 or self.step == c.steps:
                    rate = (self.step - timed_from) / max(time.monotonic() - started, 1e-9)
                    eta = (c.steps - self.step) / max(rate, 1e-9)
                    record |= {"loss": float(np.mean(losses)), "lr": self.lr}
                    self._print(f"step {self.step}/{c.steps}  loss {record['loss']:.4f}  lr {self.lr:.1e}  {rate:.2f} steps/s  eta {eta / 60:.0f} min")
                    losses.clear()
                if self.validation is not None and (self.step % c.validate_every == 0 or self.step == c.steps):
                    scores = self.validate()
                    record |= {f"val_{k}": v for k, v in scores.items()}
                    self.history.append(record)
                    self._print(
                        f"validation at step {self.step}: PSNR {scores['psnr']:.2f} dB (blurred {scores['blurred_psnr']:.2f}), "
                        f"SSIM {scores['ssim']:.4f} (blurred {scores['blurred_ssim']:.4f}){'  best' if scores['best'] else ''}"
                    )
                if len(record) > 1:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if c.keep_every and self.step % c.keep_every == 0:
                    self.export_weights(self.output / f"weights-{self.step}.safetensors", self._scores_of(record))
                if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                    self.save_checkpoint()
        finally:
            if log is not None:
                log.close()
        last = next((r for r in reversed(self.history) if "val_psnr" in r), {})
        self.export_weights(self.output / FINAL_NAME, self._scores_of(last))
        if self.validation is None:
            self.export_weights(self.output / WEIGHTS_NAME, {})
        return self.output / WEIGHTS_NAME

