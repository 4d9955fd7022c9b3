"""The Logic's catalogue of bad inputs, on real MRML (slicer-core): every entry point (segment,
compare, metrics, click, box, save correction, reference file, training start) answers bad input
with an AttentionSegError of one line, and leaves the scene (its nodes and every segment's
voxels) and the files it was given as they were."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.inference.model_file import load_model_file  # noqa: E402
from AttentionSegLib.io.image import Image, read_image  # noqa: E402
from AttentionSegLib.slicer.jobs import SegmentationJobs  # noqa: E402
from AttentionSegLib.slicer.mrml import (  # noqa: E402
    StandaloneScene,
    segmentation_node_from_label_image,
    volume_node_from_image,
)
from AttentionSegLib.slicer.reference_file import reference_segmentation_from_file  # noqa: E402
from AttentionSegLib.slicer.segments import segment_mask  # noqa: E402
from AttentionSegLib.slicer.training_logic import TrainingLogic  # noqa: E402
from AttentionSegLib.training.config import TrainingConfig  # noqa: E402


@pytest.fixture(scope="module")
def setup(trained_models, interactive_model, tmp_path_factory):
    dataset, (model, _) = trained_models
    _, summary = interactive_model
    folder = tmp_path_factory.mktemp("logic_catalogue")
    case = load_model_file(model).training["val_cases"][0]
    image = read_image(dataset.parent / "imagesTr" / f"{case}_0000.nii.gz")
    label = read_image(dataset.parent / "labelsTr" / f"{case}.nii.gz")
    (folder / "text.pt").write_text("not a model")
    (folder / "not_json.json").write_text("{oops")
    copy = folder / "dataset"
    shutil.copytree(dataset.parent, copy)
    return {
        "model": model, "interactive": Path(summary["model_file"]), "image": image, "label": label,
        "folder": folder, "dataset_copy": copy / "dataset.json", "dataset": dataset,
    }  # fmt: skip


def _scene_state(scene):
    """Every node id, and the voxels of every segment (on its segmentation's reference volume)."""
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    state = {"ids": sorted(node.GetID() for node in nodes)}
    volume = next(n for n in nodes if n.IsA("vtkMRMLScalarVolumeNode") and not n.IsA("vtkMRMLLabelMapVolumeNode"))
    for node in nodes:
        if node.IsA("vtkMRMLSegmentationNode"):
            segmentation = node.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segment_id = segmentation.GetNthSegmentID(index)
                mask = segment_mask(scene, node, segment_id, volume)
                state[(node.GetID(), segment_id)] = hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()
    return state


def _files(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ras(image: Image, index) -> tuple[float, float, float]:
    k, j, i = index
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    return (-lps[0], -lps[1], lps[2])


def _cases(s, scene, volume, work, jobs):
    image, model, interactive = s["image"], s["model"], s["interactive"]
    nan_volume = volume_node_from_image(scene, image.with_array(np.where(image.array > 50, np.nan, image.array)), "nan")
    channels = np.zeros((3, *image.spatial_shape), np.float32)
    rgb = volume_node_from_image(scene, Image(channels, image.spacing, image.origin, image.direction, True), "rgb")
    outside = _ras(image, (-40, -40, -40))
    inside = _ras(image, tuple(n // 2 for n in image.spatial_shape))
    training = TrainingLogic(scene, process_factory=lambda *a, **k: pytest.fail("must not start a process"))
    folder = s["folder"]

    def config(**changes):
        values = dict(dataset=str(s["dataset"]), model="unet", run_dir=str(folder / "run"), epochs=1)
        values.update(changes)
        return TrainingConfig(**values)

    return {
        "segment-model-text": (lambda: jobs.segment.segment(volume, folder / "text.pt"), "text.pt"),
        "segment-model-missing": (lambda: jobs.segment.segment(volume, folder / "gone.pt"), "gone.pt"),
        "segment-nan-volume": (lambda: jobs.segment.segment(nan_volume, model), "not finite"),
        "segment-rgb-volume": (lambda: jobs.segment.segment(rgb, model), "channel"),
        "segment-no-volume": (lambda: jobs.segment.segment([], model), "volume"),
        "segment-interactive-model": (lambda: jobs.segment.segment(volume, interactive), "clicks"),
        "compare-no-models": (lambda: jobs.compare.compare(volume, []), "model"),
        "compare-model-text": (lambda: jobs.compare.compare(volume, [model, folder / "text.pt"]), "text.pt"),
        "compare-nan-volume": (lambda: jobs.compare.compare(nan_volume, [model, model]), "not finite"),
        "metrics-no-segmentation": (lambda: jobs.metrics.compute_metrics(None, work), "segmentation"),
        "metrics-no-reference": (lambda: jobs.metrics.compute_metrics(work, None), "reference"),
        "click-outside": (lambda: jobs.click.click_to_segment(volume, interactive, outside, work), "outside"),
        "click-model-text": (lambda: jobs.click.click_to_segment(volume, folder / "text.pt", inside, work), "text.pt"),
        "click-unknown-segment": (
            lambda: jobs.click.click_to_segment(volume, interactive, inside, work, segment_id="nosuch"),
            "nosuch",
        ),
        "click-no-segmentation": (
            lambda: jobs.click.click_to_segment(volume, interactive, inside, None),
            "segmentation",
        ),
        "correction-not-json": (
            lambda: jobs.corrections.save_correction(volume, work, folder / "not_json.json"),
            "not_json.json",
        ),
        "correction-missing-dataset": (
            lambda: jobs.corrections.save_correction(volume, work, folder / "gone.json"),
            "gone.json",
        ),
        "correction-no-segmentation": (
            lambda: jobs.corrections.save_correction(volume, None, s["dataset_copy"]),
            "segmentation",
        ),
        "reference-text": (
            lambda: reference_segmentation_from_file(scene, folder / "not_json.json", volume),
            "not_json.json",
        ),
        "reference-missing": (
            lambda: reference_segmentation_from_file(scene, folder / "gone.nii.gz", volume),
            "gone.nii.gz",
        ),
        "training-negative-time": (lambda: training.start(config(time_limit_min=-1)), "time"),
        "training-zero-batch": (lambda: training.start(config(batch_size=0)), "batch"),
        "training-missing-dataset": (lambda: training.start(config(dataset=str(folder / "gone.json"))), "gone.json"),
        "training-unwritable-folder": (lambda: training.start(config(run_dir="/proc/attentionseg-run")), "/proc"),
        "training-unknown-network": (lambda: training.start(config(model="nosuchnet")), "nosuchnet"),
    }


CASE_IDS = [
    "segment-model-text", "segment-model-missing", "segment-nan-volume", "segment-rgb-volume",
    "segment-no-volume", "segment-interactive-model", "compare-no-models", "compare-model-text", "compare-nan-volume",
    "metrics-no-segmentation", "metrics-no-reference", "click-outside", "click-model-text", "click-unknown-segment",
    "click-no-segmentation", "correction-not-json", "correction-missing-dataset", "correction-no-segmentation",
    "reference-text", "reference-missing", "training-negative-time", "training-zero-batch", "training-missing-dataset",
    "training-unwritable-folder", "training-unknown-network",
]  # fmt: skip


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_logic_bad_input(setup, case_id):
    wiring = StandaloneScene()
    scene = wiring.scene
    volume = volume_node_from_image(scene, setup["image"], "volume")
    work = segmentation_node_from_label_image(
        scene, setup["label"], {1: "liver", 2: "spleen"}, name="work", reference_volume_node=volume
    )
    jobs = SegmentationJobs.for_scene(scene)
    cases = _cases(setup, scene, volume, work, jobs)
    call, fragment = cases[case_id]
    before, files_before = _scene_state(scene), _files(setup["folder"])
    with pytest.raises(AttentionSegError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and fragment in message, message
    after = _scene_state(scene)
    changed = {
        key: (before.get(key), after.get(key))
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }
    if "ids" in changed:
        changed["ids"] = sorted(set(before["ids"]) ^ set(after["ids"]))
    assert not changed, f"the scene changed: {changed}"
    assert _files(setup["folder"]) == files_before, "a file changed"
    assert not Path("/proc/attentionseg-run").exists()
    assert json.loads(setup["dataset_copy"].read_text())  # the dataset copy is still valid JSON
