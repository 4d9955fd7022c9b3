"""A dataset's cases segmented (and measured) over a Ray cluster's workers, resumable.

``attentionseg segment --dataset`` and ``attentionseg evaluate-dataset --predictions`` write one
label map per case into a folder (and, when measuring, the case's metrics beside it); a case whose
files are there is done, so an interrupted run started again does only the rest. The folder's
``cohort.json`` names the model (SHA-256) and options: a folder of another model is refused
rather than mixed.

With ``cluster`` (a Ray address, or a ``ray.init`` already made by the caller) each case is a Ray
task (one CPU, or one GPU where the cluster has them, spread over the nodes, retried if a worker
dies); each worker keeps its predictor between cases. Workers read the case's files themselves
(every node sees the dataset's paths, as on any cluster with a shared file system) and return
the label map; this process writes every output. Without a cluster the same per-case function
runs here, one case after another: the outputs are the same files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from AttentionSegLib.errors import AttentionSegError

__all__ = ["CohortJob", "run_cohort", "case_output", "MANIFEST"]

MANIFEST = "cohort.json"
SUFFIXES = (".nii.gz", ".nrrd", ".seg.nrrd", ".mha")


@dataclass
class CohortJob:
    """What to run: a model file (or a server's model) over ``cases`` of a dataset, outputs into ``out_dir``."""

    model: Path | str
    dataset: Path
    cases: Sequence[str]
    out_dir: Path
    suffix: str = ".nii.gz"
    measure: bool = False  # also metrics against each case's reference (evaluate-dataset)
    options: dict = field(default_factory=dict)  # Predictor options: tta, overlap, keep_largest, device

    def __post_init__(self) -> None:
        self.dataset, self.out_dir, self.cases = Path(self.dataset), Path(self.out_dir), list(self.cases)


def _file_stem(case_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)


def case_output(job: CohortJob, case_id: str) -> tuple[Path, Path]:
    """(label map, metrics JSON) of a case."""
    stem = job.out_dir / _file_stem(case_id)
    return stem.with_name(stem.name + job.suffix), stem.with_name(stem.name + ".json")


# ------------------------------------------------------------------------------ one case
_PREDICTORS: dict[tuple, object] = {}  # per worker process: one predictor per model and options
_DATASETS: dict[str, object] = {}


def _predictor(model: str, digest: str, options: dict):
    from AttentionSegLib.inference.model_source import open_predictor

    key = (model, digest, tuple(sorted(options.items())))
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = open_predictor(model, **options)
    return _PREDICTORS[key]


def segment_case(model: str, digest: str, options: dict, dataset: str, case_id: str, measure: bool) -> dict:
    """``{"case", "labels", "spacing", "origin", "direction", "row"}``: one case's label map (on its
    grid) and, when measuring, its metrics row. Runs in a worker or here."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image
    from AttentionSegLib.evaluation.batch import EvaluationCase, load_case, ordered_images, predict_and_measure

    predictor = _predictor(model, digest, options)
    if dataset not in _DATASETS:
        _DATASETS[dataset] = load_dataset(dataset)
    definition = _DATASETS[dataset]
    row = None
    if measure:
        case = load_case(definition, case_id)
        row, labels = predict_and_measure(predictor, case, predictor.model_file.label_names)
        grid = case.reference
    else:
        image = read_case_image(definition.case(case_id), definition)
        case = EvaluationCase(case_id, [image], list(definition.channel_names), None)
        prediction = predictor.predict(ordered_images(predictor, case), names=[case_id])
        grid, labels = prediction.label_image, prediction.label_image.array
    return {
        "case": case_id,
        "node": _node(),
        "labels": labels,
        "spacing": list(grid.spacing),
        "origin": list(grid.origin),
        "direction": np.asarray(grid.direction).tolist(),
        "row": row,
    }


def _node() -> str:
    """The Ray node this runs on ("here" outside a Ray worker)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return "here"
    return ray.get_runtime_context().get_node_id()


# ------------------------------------------------------------------------------ the run
def _check_folder(job: CohortJob, digest: str) -> dict:
    """The folder's manifest, after refusing a folder of another run (nothing is written here)."""
    if job.suffix not in SUFFIXES:
        raise AttentionSegError(f"{job.suffix}: label maps are written as {', '.join(SUFFIXES)}")
    # What decides the outputs; the device is not part of it (a run goes on on whatever device is there).
    options = {key: value for key, value in job.options.items() if key != "device"}
    manifest = {"model_sha256": digest, "dataset": str(Path(job.dataset).resolve()), "options": options}
    path = job.out_dir / MANIFEST
    if job.out_dir.exists() and not job.out_dir.is_dir():
        raise AttentionSegError(f"{job.out_dir}: a file, not a folder")
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except ValueError:
            raise AttentionSegError(f"{path}: not readable JSON; give another folder") from None
        if {k: earlier.get(k) for k in manifest} != json.loads(json.dumps(manifest)):
            raise AttentionSegError(
                f"{job.out_dir}: holds the outputs of another model, dataset or options ({MANIFEST}); "
                "give another folder"
            )
    return manifest


def _create_folder(job: CohortJob, manifest: dict) -> None:
    path = job.out_dir / MANIFEST
    if not path.is_file():
        from AttentionSegLib.io.atomic import write_json_atomic

        job.out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, manifest)


def _done(job: CohortJob, case_id: str) -> dict | None:
    """The case's metrics row when its outputs are complete (``{}`` when not measuring), else None."""
    labels, metrics = case_output(job, case_id)
    if not labels.is_file():
        return None
    if not job.measure:
        return {}
    try:
        return json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None


def _write(job: CohortJob, result: dict, model_file) -> dict:
    from AttentionSegLib.evaluation.report import json_safe
    from AttentionSegLib.io.atomic import write_text_atomic
    from AttentionSegLib.io.image import Image
    from AttentionSegLib.io.segmentation_file import write_label_image

    labels_path, metrics_path = case_output(job, result["case"])
    image = Image(
        np.asarray(result["labels"]),
        tuple(result["spacing"]),
        tuple(result["origin"]),
        np.asarray(result["direction"], dtype=float),
    )
    write_label_image(image, labels_path, model_file.labels, model_file.label_terminology, overwrite=True)
    if job.measure:  # the metrics file last: a case is done once it exists
        write_text_atomic(metrics_path, json.dumps(json_safe(result["row"]), indent=1))
    return result["row"] or {}


@dataclass
class CohortRun:
    """The metrics rows in case order (empty dicts when not measuring) and, per case run now, the
    node that ran it (cases done before are not listed)."""

    rows: list[dict]
    nodes: dict[str, str]


def run_cohort(
    job: CohortJob,
    cluster: str | None = None,
    on_case: Callable[[int, int, str, bool], None] | None = None,
) -> CohortRun:
    """Run ``job``. ``on_case(done, total, case_id, skipped)`` follows the run; ``cluster``: a Ray
    address, or ``"connected"`` when the caller has called ``ray.init`` already.

    Raises:
        AttentionSegError: a folder of another model, no cluster at the address.
    """
    from AttentionSegLib.inference.model_source import is_model_url, model_digest, open_model_file

    model = str(job.model) if is_model_url(job.model) else str(Path(job.model).resolve())
    digest = model_digest(model)
    model_file = open_model_file(model)
    model_file.check_automatic(str(job.model))
    manifest = _check_folder(job, digest)
    if cluster not in (None, "connected"):
        from AttentionSegLib.serve.cluster import connect

        connect(cluster)  # before anything is written: a wrong address leaves no folder behind
    _create_folder(job, manifest)
    rows: dict[str, dict] = {}
    nodes: dict[str, str] = {}
    total = len(job.cases)
    for case_id in job.cases:
        found = _done(job, case_id)
        if found is not None:
            rows[case_id] = found
            if on_case is not None:
                on_case(len(rows), total, case_id, True)
    pending = [case_id for case_id in job.cases if case_id not in rows]
    dataset = str(Path(job.dataset).resolve())
    if cluster is None:
        for case_id in pending:
            result = segment_case(model, digest, job.options, dataset, case_id, job.measure)
            rows[case_id], nodes[case_id] = _write(job, result, model_file), result["node"]
            if on_case is not None:
                on_case(len(rows), total, case_id, False)
    elif pending:
        for result in _on_cluster(cluster, model, digest, job, dataset, pending):
            rows[result["case"]], nodes[result["case"]] = _write(job, result, model_file), result["node"]
            if on_case is not None:
                on_case(len(rows), total, result["case"], False)
    return CohortRun([rows[case_id] for case_id in job.cases], nodes)


def _on_cluster(cluster: str, model: str, digest: str, job: CohortJob, dataset: str, pending: list[str]):
    """The cases' results as their tasks finish, at most as many in flight as the cluster has slots."""
    import ray

    resources = ray.cluster_resources()
    gpus = 1 if resources.get("GPU", 0) >= 1 else 0
    slots = max(1, int(resources.get("GPU", 0)) if gpus else int(resources.get("CPU", 1)))
    options = dict(job.options)
    if not gpus:
        options["device"] = "cpu"
    task = ray.remote(segment_case).options(num_cpus=1, num_gpus=gpus, max_retries=3, scheduling_strategy="SPREAD")
    queue, running = list(pending), []
    while queue or running:
        while queue and len(running) < slots:
            running.append(task.remote(model, digest, options, dataset, queue.pop(0), job.measure))
        finished, running = ray.wait(running, num_returns=1)
        yield ray.get(finished[0])
