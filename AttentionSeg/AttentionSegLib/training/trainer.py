"""The trainer: dataset definition + registry network + recipe -> run folder with a model file.

:meth:`Trainer.run` is a short template over hooks, as nnU-Net v2's ``run_training``: ``setup``
(the plan, network, optimiser and data; a resumed run's checkpoint), then for every epoch
``train_epoch`` (one ``train_step`` per batch), ``validate`` (when due) and ``on_epoch_end``
(checkpoints, model file). A variant overrides one hook. The parts, one job per module:

- :mod:`~.run_config`: the configuration, settled before any work (a resumed run's, or a new one
  completed from the experiment plan of :mod:`~.experiment_planner`);
- :mod:`~AttentionSegLib.training.run_plan`: every decision taken from the configuration and the
  data, once (split, labels, spacing, normalisation, patch, network); :mod:`~.cases` reads the cases;
- :mod:`~.augmentation` (sampler, transforms), :mod:`~.losses`, :mod:`~.schedules` (learning rate,
  optimiser), :mod:`~.budget` (epochs and time limit);
- :mod:`~.checkpoint` (checkpoints, the model file), :mod:`~.distributed` (DDP);
- validation segments with the inference's :class:`~AttentionSegLib.inference.window.WindowSegmenter`:
  one inference path.

A run folder (:class:`~AttentionSegLib.training.run_folder.RunFolder`) holds the model file
(rewritten at every new best validation Dice), the last and best checkpoints (written atomically
after every epoch, so a kill loses at most the epoch in progress), the progress events (see
``progress.py``) and the resolved configuration (``--resume`` reads it back).

Reproducibility: the network is initialised from ``seed``; every epoch reseeds PyTorch, the
sampler and MONAI's random transforms from ``(seed, epoch)``, so a resumed run continues exactly
as an uninterrupted one would, and the same seed on the same machine gives the same numbers
(CPU; cuDNN may pick non-deterministic kernels on CUDA).

Multi-GPU / multi-node: started under ``torchrun`` (``WORLD_SIZE`` > 1) the trainer uses
DistributedDataParallel (NCCL on CUDA, gloo on CPU); every rank draws its own share of each
epoch's samples; rank 0 alone validates and writes files.

Example:
    >>> summary = train(TrainingConfig("Task04/dataset.json", "unet", "runs/hippocampus", epochs=50))
    >>> summary["model_file"]
    'runs/hippocampus/model.pt'
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from AttentionSegLib.data.dataset import load_dataset
from AttentionSegLib.devices import autocast, is_out_of_memory, resolve_device
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.evaluation.metrics import dice_per_label
from AttentionSegLib.inference.window import WindowSegmenter
from AttentionSegLib.models import build_from_spec
from AttentionSegLib.models.slice_wise import SliceWise
from AttentionSegLib.progress import ProgressLog
from AttentionSegLib.training.augmentation import EpochSampler, TrainingSet, epoch_seed, training_transforms
from AttentionSegLib.training.budget import RunBudget
from AttentionSegLib.training.checkpoint import TrainingState, build_model_file, restore_checkpoint, save_checkpoints
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.distributed import Ranks
from AttentionSegLib.training.losses import build_loss
from AttentionSegLib.training.run_config import saved_config_is_interactive, settle_run_config
from AttentionSegLib.training.run_folder import RunFolder, RunLock
from AttentionSegLib.training.run_plan import plan_training
from AttentionSegLib.training.schedules import build_optimizer, learning_rate_factor

__all__ = ["Trainer", "train", "EpochResult", "StopRequested"]

# Validation keeps to what the trainer always did: half-overlapping windows, four per forward pass,
# no test-time augmentation.
VALIDATION_OVERLAP = 0.5
VALIDATION_WINDOWS_PER_BATCH = 4

StepProgress = Callable[[int, int, int, float], None]


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived: finish cleanly after the last complete epoch."""


@dataclass(frozen=True)
class EpochResult:
    """One epoch's training: mean loss, the learning rate of its last step, whether the time limit
    cut it short, and its seconds."""

    loss: float
    learning_rate: float
    truncated: bool
    seconds: float


class Trainer:
    """Runs one training; ``run()`` returns the summary printed by ``attentionseg train --json``.

    Args:
        config: what to train.
        resume: continue the run in ``config.run_dir`` from its last checkpoint.
        echo: called with every progress event (the terminal printer); None for silence.
        step_progress: called on rank 0 after every training step as
            ``step_progress(epoch, step, iterations, mean_loss_so_far)`` (a progress bar); None for none.
    """

    def __init__(
        self,
        config: TrainingConfig,
        resume: bool = False,
        echo: Callable[[dict], None] | None = None,
        step_progress: StepProgress | None = None,
    ) -> None:
        self.folder = RunFolder(config.run_dir)
        self.run_dir = self.folder.path
        self.resume = resume
        self.echo = echo
        self.step_progress = step_progress
        self.ranks = Ranks.from_environment()
        self.lock = RunLock(self.folder) if self.ranks.is_main else None
        if self.lock is not None:
            if not resume:
                self.folder.check_can_create()
            self.lock.acquire()
        try:
            self.run_config = settle_run_config(self.folder, config, resume, self.ranks.is_main)
        except BaseException:
            self.release_lock()
            raise
        self.config = self.run_config.config
        self.stop_requested = False
        self.log: ProgressLog | None = None

    # ------------------------------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Set up, train epoch by epoch until the epochs or the time are spent or a stop is
        requested, and return the summary."""
        self.log = ProgressLog(self.folder.progress_file, echo=self.echo) if self.ranks.is_main else None
        previous_handlers = self._install_signal_handlers()
        try:
            self.setup()
            reason = "epochs"
            epoch = self.state.epoch
            while epoch < self.config.epochs:
                if self.ranks.agree(self.budget.out_of_time(0.0), self.device):
                    reason = "time_limit"
                    break
                epoch += 1
                try:
                    result = self.train_epoch(epoch)
                except StopRequested:
                    reason = "stopped"
                    break
                # The last epoch the budget allows is validated even off the val_every rhythm.
                final = result.truncated or self.ranks.agree(self.budget.out_of_time(0.0), self.device)
                is_best = self._validate_if_due(epoch, final)
                self.on_epoch_end(epoch, is_best)
                if self.ranks.agree(self.stop_requested, self.device):
                    reason = "stopped"
                    break
                if result.truncated:
                    reason = "time_limit"
                    break
            return self.on_train_end(reason)
        except AttentionSegError:
            raise
        except Exception as error:
            if self.log is not None and self.run_dir.is_dir():
                self.log.emit("error", message=f"{type(error).__name__}: {error}")
            raise
        finally:
            self.release_lock()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            # The DDP wrapper's reducer must go before its process group: destroyed after it, the
            # gloo group's destructor can deadlock with a gloo thread waiting for the GIL (seen in CI).
            self.train_model = None
            Ranks.stop()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # ----------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        """Plan the run, build the network, optimiser and data, restore a resumed run's checkpoint,
        make the run folder and emit the ``start`` event."""
        config = self.config
        self.plan, self.train_cases, self.val_cases = plan_training(config, load_dataset(config.dataset))
        self.device = resolve_device(config.device, self.ranks.local_rank)
        self._check_step_memory()
        self.ranks.start(self.device)
        self._build_model()
        self.state = TrainingState()
        if self.resume:
            self.state = restore_checkpoint(self.folder, self.model, self.optimizer, self.scaler, self.device)
        self.train_model = self.ranks.wrap(self.model, self.device)
        self._build_loader()
        self.budget = RunBudget(config, self.state)
        self.segmenter = WindowSegmenter(
            self.model,
            self.plan.patch_size,
            overlap=VALIDATION_OVERLAP,
            windows_per_batch=VALIDATION_WINDOWS_PER_BATCH,
            sigmoid=self.plan.binary_sigmoid,
        )
        self._probe_validation_time()
        # Built (or read back) once: the model file is rewritten at every new best epoch.
        self.plan_document = self.run_config.plan_document(self.folder)
        if self.ranks.is_main and not self.resume:
            self.folder.checkpoints.mkdir(parents=True, exist_ok=True)
            config.save(self.folder.config_file)
            self.run_config.save_plan(self.folder, self.plan_document)
        if self.log:
            self._emit_start()

    def _probe_validation_time(self) -> None:
        """Under a time limit, time the validation of one case so that the budget keeps back the
        final validation from the start (else, with a sparse validation interval, a run that has
        not validated yet overruns its limit by a whole validation: 58 s of 600 in a measured run)."""
        if not (self.budget.limited and self.val_cases and self.ranks.is_main):
            return
        started = time.perf_counter()
        self.validate(self.val_cases[:1])  # warms the kernels up: the first call is slower
        timed = time.perf_counter()
        self.validate(self.val_cases[-1:])
        self.model.train()
        self.budget.estimate_validation((time.perf_counter() - timed) * len(self.val_cases))
        self.state.elapsed_s += time.perf_counter() - started

    def _check_step_memory(self) -> None:
        """Refuse a training step that will not fit (weights, gradients, optimiser state and the
        activations of one batch, :func:`AttentionSegLib.models.memory.estimate_step`) in the
        memory free now, before the network is built, in one line with the figures."""
        from AttentionSegLib.inference.memory_check import free_device_memory
        from AttentionSegLib.models.memory import estimate_step
        from AttentionSegLib.resources import available_memory_bytes, format_bytes

        config, spec = self.config, self.plan.network
        batch = config.batch_size * (self.plan.patch_size[0] if self.plan.slice_wise else 1)
        needed = estimate_step(spec, batch).training_bytes(config.optimizer)
        free = free_device_memory(self.device)
        where = "GPU memory" if free is not None else "memory"
        free = available_memory_bytes() if free is None else free
        if needed > free:
            patch = "x".join(str(n) for n in self.plan.patch_size)
            raise AttentionSegError(
                f"{config.dataset}: one training step of {spec['name']} (patch {patch}, batch {config.batch_size}) "
                f"needs about {format_bytes(needed)} of {where}, {format_bytes(free)} are free: use a smaller "
                "--batch or --patch" + (", or --device cpu" if where == "GPU memory" else "")
            )

    def _build_model(self) -> None:
        """The network (initialised from the seed, or from the ``--init`` model's weights) on the
        device, its optimiser, gradient scaler (float16 autocast only) and loss."""
        spec, config = self.plan.network, self.config
        torch.manual_seed(config.seed)
        network = build_from_spec(spec)
        self.new_label_channels: list[int] = []
        if config.init and not self.resume:
            from AttentionSegLib.training.fine_tune import base_model, load_base_weights

            self.new_label_channels = load_base_weights(network, base_model(config.init), self.plan, config.init)
        self.model = (SliceWise(network) if self.plan.slice_wise else network).to(self.device)
        self.optimizer = build_optimizer(config, self.model.parameters())
        use_scaler = self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.loss_function = build_loss(config.loss, self.plan.deep_supervision)

    def _build_loader(self) -> None:
        """The epoch's batches: this rank's share of the sampled cases, augmented."""
        from monai.data import DataLoader

        config, ranks = self.config, self.ranks
        self.iterations = config.iterations_per_epoch or max(10, math.ceil(len(self.train_cases) / config.batch_size))
        self.sampler = EpochSampler(
            len(self.train_cases), self.iterations * config.batch_size, config.seed, ranks.rank, ranks.world_size
        )
        self.transforms = training_transforms(
            self.plan.patch_size, config.slice_wise, self.plan.mirror_axes, self.plan.foreground_oversampling
        )
        self.loader = DataLoader(
            TrainingSet(self.train_cases, self.transforms),
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.workers,
            drop_last=False,
            persistent_workers=False,  # fresh workers each epoch, seeded from the epoch's seed
        )

    def _emit_start(self) -> None:
        config, plan = self.config, self.plan
        self.log.emit(
            "start",
            run_dir=self.run_dir,
            model=config.model,
            dataset=plan.dataset_name,
            labels={value: name for value, name in plan.label_names.items() if value != 0},
            n_train=len(self.train_cases),
            n_val=len(self.val_cases),
            epochs=config.epochs,
            time_limit_min=config.time_limit_min,
            device=str(self.device),
            resumed=self.resume,
            start_epoch=self.state.epoch + 1,
            patch_size=plan.patch_size,
            batch_size=config.batch_size,
            iterations_per_epoch=self.iterations,
            world_size=self.ranks.world_size,
            initialised_from=config.init,
            new_label_channels=self.new_label_channels,
        )

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be installed from the main thread

        def request_stop(signum, frame):
            self.stop_requested = True

        return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}

    # -------------------------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> EpochResult:
        """One epoch, reseeded from (seed, epoch); the learning rate follows the schedule step by
        step. Under a time limit the epoch ends early once the budget (less the time a final
        validation takes) is spent. Emits the ``epoch`` event.

        Raises:
            StopRequested: a stop signal arrived during the epoch.
        """
        started = time.perf_counter()
        seed = epoch_seed(self.config.seed, epoch) + self.ranks.rank
        torch.manual_seed(seed)
        self.transforms.set_random_state(seed=seed)
        self.sampler.set_epoch(epoch)
        self.train_model.train()
        losses: list[float] = []
        learning_rate, truncated = self.config.learning_rate, False
        for step, batch in enumerate(self.loader, start=1):
            if self.stop_requested:
                raise StopRequested
            out_of_time, progress = self._schedule_position(epoch, step, time.perf_counter() - started)
            if out_of_time:
                truncated = True
                break
            learning_rate = self.config.learning_rate * learning_rate_factor(self.config.schedule, progress)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate
            losses.append(self._train_step_or_fall_back(batch))
            if self.step_progress is not None and self.ranks.is_main:
                self.step_progress(epoch, step, self.iterations, float(np.mean(losses)))
        result = EpochResult(float(np.mean(losses)), learning_rate, truncated, time.perf_counter() - started)
        self.state.elapsed_s += result.seconds
        if self.log:
            self.log.emit(
                "epoch",
                epoch=epoch,
                epochs=self.config.epochs,
                loss=result.loss,
                lr=result.learning_rate,
                seconds=result.seconds,
                elapsed_s=self.state.elapsed_s,
                **({"truncated": True} if truncated else {}),
            )
        return result

    def _schedule_position(self, epoch: int, step: int, seconds: float) -> tuple[bool, float]:
        """Whether the time budget ends the epoch before ``step``, and the run's progress (0..1)."""
        # A started epoch trains at least one step, so every epoch event has a loss.
        out_of_time = step > 1 and self.budget.out_of_time(seconds)
        progress = self.budget.progress(epoch - 1 + (step - 1) / self.iterations, seconds)
        if self.budget.limited:  # time-based: each rank's clock differs, rank 0's counts
            out_of_time, progress = self.ranks.from_rank_0([float(out_of_time), progress], self.device)
        return bool(out_of_time), progress

    def _train_step_or_fall_back(self, batch: dict[str, torch.Tensor]) -> float:
        """``train_step``; a CUDA out-of-memory error (single process) repeats it on the CPU."""
        while True:
            try:
                return self.train_step(batch)
            except RuntimeError as error:
                if self.device.type != "cuda" or not is_out_of_memory(error) or self.ranks.distributed:
                    raise
                self._fall_back_to_cpu()

    def batch_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The network's arguments (image[, clinical vector]) and the target, on the device."""
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        return ((image, batch["clinical"].to(self.device)) if "clinical" in batch else (image,)), label

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on one batch (mixed precision on CUDA, gradients clipped); returns the loss.

        Raises:
            FloatingPointError: the loss is not finite.
        """
        arguments, label = self.batch_inputs(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device):
            output = self.train_model(*arguments)
        output = [item.float() for item in output] if isinstance(output, list) else output.float()
        loss = self.loss_function(output, label)
        if not torch.isfinite(loss):
            raise FloatingPointError("the training loss is not finite; lower the learning rate")
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.train_model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _fall_back_to_cpu(self) -> None:
        message = "CUDA ran out of memory: continuing on the CPU (use a smaller --batch or --patch to stay on the GPU)"
        print(message, file=sys.stderr)
        torch.cuda.empty_cache()
        cpu = torch.device("cpu")
        self.train_model.to(cpu)
        for parameter_state in self.optimizer.state.values():
            for key, value in parameter_state.items():
                if torch.is_tensor(value):
                    parameter_state[key] = value.to(cpu)
        self.device = cpu

    # ------------------------------------------------------------------------------ validation
    def _validate_if_due(self, epoch: int, final: bool) -> bool:
        """Validate (rank 0) every ``val_every`` epochs, after the last, and after the last epoch
        the time budget allows (``final``); keep the best and emit the ``validation`` event.
        Returns whether this epoch's weights are the best so far. The validation's time counts
        against the budget."""
        config, state = self.config, self.state
        due = bool(self.val_cases) and (epoch % config.val_every == 0 or epoch == config.epochs or final)
        started = time.perf_counter()
        is_best = False
        if self.ranks.is_main:
            if due:
                dice = self.validate()
                mean_dice = float(np.nanmean(list(dice.values()))) if dice else float("nan")
                is_best = math.isfinite(mean_dice) and mean_dice > state.best_mean_dice
                if is_best:
                    state.best_mean_dice, state.best_epoch, state.best_dice = mean_dice, epoch, dice
                self.log.emit(
                    "validation",
                    epoch=epoch,
                    dice=dice,
                    mean_dice=mean_dice,
                    best_mean_dice=state.best_mean_dice,
                    is_best=is_best,
                )
            elif not self.val_cases:
                is_best = True  # nothing to validate on: the latest weights are the model
                state.best_epoch = epoch
        seconds = time.perf_counter() - started
        state.elapsed_s += seconds
        if due:
            self.budget.record_validation(seconds)
        return is_best

    @torch.no_grad()
    def validate(self, cases: list | None = None) -> dict[int, float]:
        """Mean Dice per foreground label value over the validation cases, segmented by the
        sliding-window segmenter on the resampled grid. A label absent from both prediction and
        reference of a case does not count for that case; NaN when it counts for none."""
        self.model.eval()
        foreground = range(1, len(self.plan.label_values))
        scores: dict[int, list[float]] = {index: [] for index in foreground}
        for case in self.val_cases if cases is None else cases:
            image = torch.from_numpy(case.image)[None].to(self.device)
            clinical = torch.from_numpy(case.clinical)[None].to(self.device) if case.clinical is not None else None
            classes = self.segmenter.classes(self.segmenter.logits(image, clinical))
            for index, dice in dice_per_label(classes, case.label[0], foreground).items():
                if not math.isnan(dice):  # NaN: the label is in neither map
                    scores[index].append(dice)
        values = self.plan.label_values
        return {values[index]: float(np.mean(dice)) if dice else float("nan") for index, dice in scores.items()}

    # ------------------------------------------------------------------------------ epoch end
    def on_epoch_end(self, epoch: int, is_best: bool) -> None:
        """Record the epoch and write the checkpoints (and, at a new best, the model file) on rank 0."""
        self.state.epoch = epoch
        if self.ranks.is_main:
            save_checkpoints(
                self.folder,
                self.model,
                self.optimizer,
                self.scaler,
                self.state,
                is_best,
                self.log,
                model_file=lambda: build_model_file(self.plan, self.config, self.model, self.state, self.plan_document),
            )
        self.ranks.barrier()

    def on_train_end(self, reason: str) -> dict[str, Any]:
        """The run's summary (also the ``end`` event): ``reason`` is "epochs", "time_limit" or "stopped"."""
        state, model_file = self.state, self.folder.model_file
        summary = {
            "run_dir": str(self.run_dir),
            "model_file": str(model_file) if model_file.exists() else None,
            "epochs_done": state.epoch,
            "best_epoch": state.best_epoch,
            "best_mean_dice": state.best_mean_dice_or_none,
            "best_dice": state.best_dice,
            "reason": reason,
            "elapsed_s": state.elapsed_s,
            "device": str(self.device),
        }
        if self.log:
            end_keys = ("epochs_done", "best_epoch", "best_mean_dice", "model_file", "reason", "elapsed_s")
            self.log.emit("end", **{key: summary[key] for key in end_keys})
        return summary


def train(
    config: TrainingConfig,
    resume: bool = False,
    echo: Callable[[dict], None] | None = None,
    step_progress: StepProgress | None = None,
) -> dict:
    """Run a training to the end; see :class:`Trainer` (and, for ``config.interactive``,
    :class:`~AttentionSegLib.training.interactive.InteractiveTrainer`)."""
    trainer_class = Trainer
    if config.init and not resume:
        from AttentionSegLib.training.fine_tune import base_model

        interactive = base_model(config.init).is_interactive
    else:
        interactive = config.interactive or (resume and saved_config_is_interactive(config))
    if interactive:
        from AttentionSegLib.training.interactive import InteractiveTrainer

        trainer_class = InteractiveTrainer
    return trainer_class(config, resume=resume, echo=echo, step_progress=step_progress).run()
