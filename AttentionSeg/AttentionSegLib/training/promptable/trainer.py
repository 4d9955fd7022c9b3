"""Training the promptable generalist: one class-agnostic network, "the object under these prompts",
on every structure of a dataset collection (:mod:`AttentionSegLib.data.collection`).

Why its own loop rather than :class:`~AttentionSegLib.training.trainer.Trainer`: that trainer
follows one dataset's experiment plan (one spacing, one normalisation, one label set, epochs over
cases); the generalist has none of these: every sample picks its dataset, object, scale and
contrast (:mod:`.samples`), it works at the image's own spacing with zoom levels, and its schedule
is counted in steps. What both share is used from the same modules: the simulated user
(:func:`~AttentionSegLib.training.interactive.simulate_prompts`, with every prompt kind), the
prompt encoding, the loss, the robot user for validation, atomic checkpoints and the model file.

Reproducible and resumable: step ``k`` draws its samples from ``(seed, k)`` alone and reseeds
PyTorch from it; the run folder (:class:`~AttentionSegLib.training.run_folder.RunFolder`, locked
while a run trains in it) holds ``config.json`` (the run's settings), ``checkpoints/last.pt``
(weights, optimiser, step; written atomically every ``checkpoint_minutes``), ``model.pt`` (the
model file of the last checkpoint) and ``log.jsonl`` (one line per logged step). ``--resume``
continues a stopped run from its checkpoint: the same steps as an uninterrupted run (CPU).

Fast on a GPU: with ``workers`` the samples of the next step are drawn in a pool of forked processes
while the network trains on this one, and the simulated user's per-sample work (next clicks,
encodings) is mapped over the same pool; every sample draws from its own seed, so the run does not
depend on how many workers there are. ``init`` starts from another model file's weights (a longer
run or a fine-tune continuing the shipped model).
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from AttentionSegLib import __version__
from AttentionSegLib.data.collection import Collection, load_collection
from AttentionSegLib.devices import autocast, resolve_device
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.inference.model_file import ModelFile, load_model_file
from AttentionSegLib.interactive.prompts import PromptEncoding
from AttentionSegLib.interactive.segmenter import ZOOM_LEVELS
from AttentionSegLib.io.atomic import atomic_torch_save
from AttentionSegLib.models import build_from_spec
from AttentionSegLib.training.interactive import UserSimulation, simulate_prompts
from AttentionSegLib.training.losses import build_loss
from AttentionSegLib.training.promptable.samples import (
    NORMALIZATION,
    LoadedCase,
    ObjectSample,
    draw_sample,
    load_cases,
)
from AttentionSegLib.training.run_folder import RunFolder, RunLock

__all__ = ["PromptableConfig", "train_promptable", "GENERALIST_SIMULATION", "network_spec"]

# The simulated user of the generalist draws from every prompt kind; clicks stay the most common.
GENERALIST_SIMULATION = UserSimulation(
    box_probability=0.15,
    slice_box_probability=0.1,
    lasso_probability=0.1,
    scribble_probability=0.1,
    several_clicks_probability=0.2,
    correction_probability=0.75,
    max_correction_rounds=4,
)


@dataclass
class PromptableConfig:
    """The settings of a generalist run (``config.json`` of its run folder).

    Attributes:
        collection, data_root: the collection file and the folder its paths start from.
        run_dir: the run folder.
        steps: optimiser steps of the whole run (the learning-rate schedule spans them).
        minutes: this invocation stops (with a checkpoint) after this long; ``--resume`` goes on.
        leave_out: datasets of the collection left out (leave-one-dataset-out runs).
        patch: the window, voxels per axis.
        channels: widths of the UNet's levels.
        batch_size, learning_rate, seed, device, click_radius_mm, checkpoint_minutes: as named.
        workers: processes drawing samples and simulating the user (0: in this process); the
            run's numbers do not depend on it.
        init: a model file whose weights the run starts from (same network), or None.
        name: the model's name (its file's stem when shipped).
    """

    collection: str
    data_root: str
    run_dir: str
    steps: int = 4000
    minutes: float | None = None
    leave_out: list[str] = field(default_factory=list)
    patch: int = 64
    channels: list[int] = field(default_factory=lambda: [24, 48, 96, 192, 320])
    batch_size: int = 2
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"
    click_radius_mm: float = 2.0
    checkpoint_minutes: float = 5.0
    workers: int = 0
    init: str | None = None
    name: str = "promptable-generalist"

    def check(self) -> None:
        if self.workers < 0:
            raise AttentionSegError(f"workers ({self.workers}) must be 0 or more")
        if self.steps < 1 or self.batch_size < 1 or self.patch < 32 or self.patch % 16:
            raise AttentionSegError(
                f"steps ({self.steps}) and batch size ({self.batch_size}) must be positive and the patch "
                f"({self.patch}) a multiple of 16, at least 32"
            )


def network_spec(config: PromptableConfig) -> dict:
    """The registry network of the generalist: MONAI's UNet, one image channel plus the four
    prompt channels in, background / object out."""
    return {
        "name": "unet",
        "spatial_dims": 3,
        "in_channels": 5,
        "out_channels": 2,
        "patch_size": [config.patch] * 3,
        "clinical_features": 0,
        "options": {"channels": list(config.channels), "strides": [2, 2, 2, 2], "num_res_units": 1},
    }


# The cases a pool worker draws samples from: inherited when the pool forks, never pickled.
_WORKER_CASES: list[LoadedCase] = []


def _use_cases(cases: list[LoadedCase]) -> None:
    global _WORKER_CASES
    _WORKER_CASES = cases


def _start_worker(cases: list[LoadedCase]) -> None:
    _use_cases(cases)
    torch.set_num_threads(1)  # the pool is the parallelism; threads per worker would oversubscribe


def _draw_in_worker(work) -> ObjectSample:
    case_index, patch, seed = work
    return draw_sample(_WORKER_CASES[case_index], patch, np.random.default_rng(seed))


class _Run:
    def __init__(self, config: PromptableConfig, collection: Collection | None = None, initialise: bool = True):
        self.config = config
        self.folder = RunFolder(config.run_dir)
        if collection is None:
            collection = load_collection(config.collection, config.data_root)
        self.collection: Collection = collection.without(config.leave_out)
        self.device = resolve_device(config.device)
        self.encoding = PromptEncoding(config.click_radius_mm)
        torch.manual_seed(config.seed)
        # On the CPU until the sample workers are forked (see start): a forked CUDA context is unusable.
        self.model = build_from_spec(network_spec(config))
        if config.init and initialise:
            self._initialise(Path(config.init))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate, weight_decay=1e-5)
        self.loss = build_loss("dice_ce", deep_supervision=False)
        self.step = 0
        self.stop_requested = False
        self.pool = None
        self.prefetched: tuple[int, multiprocessing.pool.AsyncResult] | None = None

    def _initialise(self, path: Path) -> None:
        model_file = load_model_file(path)
        if model_file.network != network_spec(self.config):
            raise AttentionSegError(
                f"{path}: its network ({model_file.network['name']}, patch {model_file.patch_size}, "
                f"options {model_file.network.get('options')}) is not this run's; --init needs the same network"
            )
        self.model.load_state_dict(model_file.state_dict)

    # ---------------------------------------------------------------- data
    def load(self, log, cases: list[LoadedCase] | None = None) -> None:
        started = time.perf_counter()
        if cases is None:
            cases = load_cases(self.collection)
        else:  # cases already in memory: keep those of the collection's (not left-out) datasets
            names = {dataset.name for dataset in self.collection.datasets}
            cases = [case for case in cases if case.dataset in names]
        self.cases: list[LoadedCase] = cases
        by_dataset: dict[str, list[int]] = {}
        for index, case in enumerate(self.cases):
            by_dataset.setdefault(case.dataset, []).append(index)
        weights = {dataset.name: dataset.weight for dataset in self.collection.datasets}
        self.datasets = list(by_dataset)
        self.by_dataset = by_dataset
        total = sum(weights[name] for name in self.datasets)
        self.weights = np.asarray([weights[name] / total for name in self.datasets])
        counts = {name: len(cases) for name, cases in by_dataset.items()}
        log(f"loaded {len(self.cases)} training cases {counts} in {time.perf_counter() - started:.0f} s")

    def start(self) -> None:
        """Fork the sample workers, then move the network to its device."""
        if self.config.workers > 0:
            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(self.config.workers, initializer=_start_worker, initargs=(self.cases,))
        else:
            _use_cases(self.cases)
        self.model.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None

    def _batch_work(self, step: int) -> list[tuple[int, list[int], int]]:
        """What the samples of ``step`` are: (case index, patch, seed) each, from ``(seed, step)``."""
        rng = np.random.default_rng([self.config.seed, step, 0])
        work = []
        for _ in range(self.config.batch_size):
            dataset = self.datasets[int(rng.choice(len(self.datasets), p=self.weights))]
            cases = self.by_dataset[dataset]
            work.append((cases[int(rng.integers(len(cases)))], [self.config.patch] * 3, int(rng.integers(2**63))))
        return work

    def samples(self, step: int) -> list[ObjectSample]:
        if self.pool is None:
            return [_draw_in_worker(work) for work in self._batch_work(step)]
        if self.prefetched is not None and self.prefetched[0] == step:
            pending = self.prefetched[1]
        else:
            pending = self.pool.map_async(_draw_in_worker, self._batch_work(step))
        if step + 1 < self.config.steps:
            self.prefetched = (step + 1, self.pool.map_async(_draw_in_worker, self._batch_work(step + 1)))
        return pending.get()

    def batch(self, step: int):
        samples = self.samples(step)
        images = torch.from_numpy(np.stack([s.image for s in samples])).to(self.device)
        targets = np.stack([s.target for s in samples])
        return images, targets, [s.spacing for s in samples]

    # ---------------------------------------------------------------- training
    def learning_rate(self) -> float:
        """Polynomial decay over the run's steps (nnU-Net's schedule), counted in steps so that a
        resumed run follows the same curve."""
        return self.config.learning_rate * (1 - self.step / self.config.steps) ** 0.9

    @torch.no_grad()
    def _predict(self, inputs: torch.Tensor) -> np.ndarray:
        self.model.eval()
        try:
            with autocast(self.device):
                logits = self.model(inputs)
        finally:
            self.model.train()
        return (logits[:, 1] > logits[:, 0]).cpu().numpy()

    def train_step(self) -> float:
        torch.manual_seed(self.config.seed * 1_000_003 + self.step)
        images, targets, spacings = self.batch(self.step)
        rng = np.random.default_rng([self.config.seed, self.step, 1])
        prompts = simulate_prompts(
            self._predict,
            images,
            targets,
            spacings,
            self.encoding,
            rng,
            GENERALIST_SIMULATION,
            map_fn=map if self.pool is None else self.pool.map,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.model.train()
        target = torch.from_numpy(targets[:, None].astype(np.int64)).to(self.device)
        with autocast(self.device):
            logits = self.model(torch.cat([images, prompts], dim=1))
            loss = self.loss(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    # ---------------------------------------------------------------- files
    def save(self, seconds: float) -> None:
        self.folder.checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(
            {
                "format": "attentionseg-promptable-checkpoint",
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "step": self.step,
                "seconds": seconds,
            },
            self.folder.last_checkpoint,
        )
        self.model_file(seconds).save(self.folder.model_file)

    def restore(self) -> float:
        try:
            state = torch.load(self.folder.last_checkpoint, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise AttentionSegError(f"{self.folder.last_checkpoint}: cannot resume ({str(error)[:160]})") from None
        self.step = int(state["step"])
        return float(state.get("seconds", 0.0))

    def model_file(self, seconds: float) -> ModelFile:
        config = self.config
        datasets = [
            {
                "name": dataset.name,
                "licence": dataset.licence,
                "training_cases": len(dataset.training_cases),
                "held_out_cases": list(dataset.held_out),
                "labels": "all" if dataset.labels is None else {str(k): v for k, v in dataset.labels.items()},
            }
            for dataset in self.collection.datasets
        ]
        return ModelFile(
            network=network_spec(config),
            channel_names=["image"],
            labels=[
                {"value": 0, "name": "background", "color": [0.0, 0.0, 0.0]},
                {"value": 1, "name": "object", "color": [1.0, 0.8, 0.2]},
            ],
            interactive={"prompt_encoding": self.encoding.to_dict(), "object_labels": []},
            output_activation="softmax",
            preprocessing={
                "target_spacing": None,
                "zoom_levels": list(ZOOM_LEVELS),
                "normalization": NORMALIZATION.as_dict(),
                "image_kind": "any",
                "slice_wise": False,
                "mirror_axes": [],
                "patch_size": [config.patch] * 3,
            },
            training={
                "kind": "promptable-generalist",
                "name": config.name,
                "collection": Path(config.collection).name,
                "datasets": datasets,
                "left_out": list(config.leave_out),
                "initialised_from": Path(config.init).name if config.init else None,
                "steps": self.step,
                "steps_planned": config.steps,
                "training_seconds": round(seconds),
                "config": _portable_config(config),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "device": str(self.device),
                "versions": {
                    "attentionseg": __version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
            },
            state_dict={key: value.detach().cpu().clone() for key, value in self.model.state_dict().items()},
        )


def _portable_config(config: PromptableConfig) -> dict:
    """The settings without this machine's paths (the model card's command gives them)."""
    values = asdict(config)
    for key in ("collection", "data_root", "run_dir", "init"):
        if values[key]:
            values[key] = Path(values[key]).name
    return values


def train_promptable(
    config: PromptableConfig,
    resume: bool = False,
    log=print,
    data: tuple[Collection, list[LoadedCase]] | None = None,
) -> Path:
    """Train (or go on training) the generalist; returns the run's model file.

    ``data``: the collection and its training cases already in memory, where the collection's files
    are not at hand (a packed copy sent to a lent GPU machine, ``bench/gpu_generalist.py``).

    Raises:
        AttentionSegError: a bad collection, a folder that holds another run (without ``resume``),
            a folder another training is running in, or nothing to resume.
    """
    folder = RunFolder(config.run_dir)
    if resume:
        if not folder.config_file.is_file() or not folder.can_resume():
            checkpoint = folder.last_checkpoint.relative_to(folder.path).as_posix()
            raise AttentionSegError(f"{folder.path}: nothing to resume (no config.json and {checkpoint})")
        saved = PromptableConfig(**json.loads(folder.config_file.read_text()))
        # A resumed run keeps its settings; it may get more steps and another time limit or device.
        saved.steps = max(saved.steps, config.steps) if config.steps else saved.steps
        saved.minutes, saved.device, saved.workers = config.minutes, config.device, config.workers
        # Paths are this invocation's: a run folder may have been moved or copied since.
        saved.collection, saved.data_root, saved.run_dir = config.collection, config.data_root, config.run_dir
        config = saved
    else:
        folder.check_can_create()
        if folder.holds_files_other_than():
            raise AttentionSegError(f"{folder.path}: the folder is not empty; use --resume to continue the run in it")
    config.check()
    lock = RunLock(folder).acquire()
    try:
        return _train(config, folder, resume, log, data)
    finally:
        lock.release()


def _train(config: PromptableConfig, folder: RunFolder, resume: bool, log, data) -> Path:
    collection, cases = data if data is not None else (None, None)
    run = _Run(config, collection, initialise=not resume)
    run.load(log, cases)
    run.start()
    try:
        return _train_steps(run, config, folder, resume, log)
    finally:
        run.stop()


def _train_steps(run: _Run, config: PromptableConfig, folder: RunFolder, resume: bool, log) -> Path:
    seconds_before = run.restore() if resume else 0.0
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.config_file.write_text(json.dumps(asdict(config), indent=2))
    log(f"device {run.device}; step {run.step} of {config.steps}; {config.workers} sample workers")

    def request_stop(signum, frame):
        run.stop_requested = True

    previous_handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.perf_counter()
    last_save = started
    losses: list[float] = []
    try:
        with (folder.path / "log.jsonl").open("a") as log_file:
            while run.step < config.steps and not run.stop_requested:
                losses.append(run.train_step())
                elapsed = time.perf_counter() - started
                if run.step % 50 == 0 or run.step == config.steps:
                    line = {
                        "step": run.step,
                        "loss": float(np.mean(losses)),
                        "lr": run.learning_rate(),
                        "seconds": round(seconds_before + elapsed, 1),
                    }
                    log_file.write(json.dumps(line) + "\n")
                    log_file.flush()
                    log(f"step {run.step}/{config.steps}  loss {line['loss']:.4f}  {line['seconds'] / 60:.1f} min")
                    losses = []
                if time.perf_counter() - last_save > config.checkpoint_minutes * 60:
                    run.save(seconds_before + elapsed)
                    last_save = time.perf_counter()
                if config.minutes is not None and elapsed > config.minutes * 60:
                    break
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    run.save(seconds_before + time.perf_counter() - started)
    finished = run.step >= config.steps
    log(f"{'finished' if finished else 'stopped'} at step {run.step} of {config.steps}; model file {folder.model_file}")
    return folder.model_file
