"""The AttentionSeg module's Logic against real MRML (slicer-core): segment, metrics, compare,
click-to-segment, saving corrections as training cases, and the background runner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import vtk  # noqa: E402

from AttentionSegLib.data.dataset import load_dataset  # noqa: E402
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label  # noqa: E402
from AttentionSegLib.data.validation import validate_dataset  # noqa: E402
from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.evaluation.metrics import evaluate_label_maps  # noqa: E402
from AttentionSegLib.inference.predictor import PredictionCancelled, Predictor  # noqa: E402
from AttentionSegLib.io.image import read_image  # noqa: E402
from AttentionSegLib.slicer.background import BackgroundSegmentation  # noqa: E402
from AttentionSegLib.slicer.click_logic import ClickLogic  # noqa: E402
from AttentionSegLib.slicer.compare_logic import CompareLogic  # noqa: E402
from AttentionSegLib.slicer.corrections_logic import CorrectionsLogic  # noqa: E402
from AttentionSegLib.slicer.jobs import SegmentationJobs  # noqa: E402
from AttentionSegLib.slicer.metrics_logic import MetricsLogic  # noqa: E402
from AttentionSegLib.slicer.mrml import (  # noqa: E402
    StandaloneScene,
    image_from_volume_node,
    label_image_from_segmentation_node,
    segmentation_node_from_label_image,
    volume_node_from_image,
)
from AttentionSegLib.slicer.predictor_cache import PredictorCache  # noqa: E402
from AttentionSegLib.slicer.segment_logic import SegmentLogic  # noqa: E402
from AttentionSegLib.slicer.segments import segment_mask  # noqa: E402

NAMES = {1: "liver", 2: "spleen"}


@pytest.fixture
def scene_and_case(trained_models):
    """A scene with one held-out phantom case loaded as a volume and its reference segmentation."""
    dataset, (good, _) = trained_models
    definition = load_dataset(dataset)
    case_id = Predictor(good, device="cpu").model_file.training["val_cases"][0]
    image = read_case_image(definition.case(case_id), definition)
    reference = read_case_label(definition.case(case_id), definition, image)
    wiring = StandaloneScene()
    volume = volume_node_from_image(wiring.scene, image.channel(0), "phantom")
    reference_node = segmentation_node_from_label_image(
        wiring.scene, image.channel(0).with_array(reference.astype(np.uint8)), NAMES, name="reference",
        reference_volume_node=volume,
    )  # fmt: skip
    return wiring, volume, reference_node, image.channel(0), reference


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def test_segment_makes_named_coloured_segments_on_the_volume_grid(trained_models, scene_and_case):
    _, (good, _) = trained_models
    wiring, volume, _, image, _ = scene_and_case
    logic = SegmentLogic(wiring.scene)
    node = logic.segment(volume, good, device="cpu")
    assert node.GetName() == "good"
    segmentation = node.GetSegmentation()
    segments = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
    assert segments == {"liver", "spleen"}
    model = Predictor(good, device="cpu")
    color = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver")).GetColor()
    np.testing.assert_allclose(color, model.labels[0]["color"], atol=1e-6)
    labels = label_image_from_segmentation_node(node, volume)
    expected = model.predict(image_from_volume_node(volume)).label_image
    np.testing.assert_array_equal(labels.array, expected.array)
    np.testing.assert_allclose(labels.direction, image.direction, atol=1e-9)
    np.testing.assert_allclose(labels.origin, image.origin, atol=1e-6)


def test_metrics_against_a_reference_equal_the_engine(trained_models, scene_and_case):
    _, (good, _) = trained_models
    wiring, volume, reference_node, _, reference = scene_and_case
    node = SegmentLogic(wiring.scene).segment(volume, good, device="cpu")
    table, report = MetricsLogic(wiring.scene).compute_metrics(node, reference_node)  # on the reference's own geometry
    predicted = label_image_from_segmentation_node(node, volume)
    expected = evaluate_label_maps(
        predicted.array, reference, image_from_volume_node(volume).spacing_array_order, NAMES
    )
    for got, want in zip(report["labels"], expected["labels"]):
        assert got["name"] == want["name"] and got["dice"] == pytest.approx(want["dice"], abs=1e-12)
        assert got["hd95_mm"] == pytest.approx(want["hd95_mm"], abs=1e-9)
    assert table.GetNumberOfRows() == 3  # two labels and the mean


def test_compare_with_and_without_a_reference(trained_models, scene_and_case):
    _, models = trained_models
    wiring, volume, reference_node, _, _ = scene_and_case
    logic = CompareLogic(wiring.scene)
    result = logic.compare(volume, models, reference_node, device="cpu")
    assert [node.GetName() for node in result["segmentations"]] == ["good", "short"]
    assert result["table"].GetNumberOfRows() == 4  # 2 models x 2 labels
    assert result["chart"].GetNumberOfPlotSeriesNodes() == 2
    dice_column = result["table"].GetTable().GetColumnByName("Dice")
    _, single = MetricsLogic(wiring.scene).compute_metrics(result["segmentations"][0], reference_node, volume)
    assert dice_column.GetValue(0) == pytest.approx(single["labels"][0]["dice"])

    # The pairwise differences on this case: first minus second, per label, Dice and HD95.
    pairwise = result["pairwise"].GetTable()
    assert pairwise.GetNumberOfRows() == 1 * 2 * 2  # one pair x 2 labels x 2 metrics
    dice_good, dice_short = (
        {row["value"]: row["dice"] for row in result["reports"][name]["labels"]} for name in ("good", "short")
    )
    assert pairwise.GetValueByName(0, "Metric").ToString() == "Dice"
    assert pairwise.GetValueByName(0, "Difference").ToDouble() == pytest.approx(dice_good[1] - dice_short[1])

    # The voxel maps: consensus, agreement, each model's errors, the largest errors in RAS.
    maps = result["maps"]
    assert set(maps.consensus) == {"majority", "staple"} and set(maps.errors) == {"good", "short"}
    good_labels = label_image_from_segmentation_node(result["segmentations"][0], volume).array
    reference = label_image_from_segmentation_node(reference_node, volume, {"liver": 1, "spleen": 2}).array
    errors = maps.errors["good"].GetSegmentation()
    fp_id = errors.GetSegmentIdBySegmentName("liver false positive")
    fn_id = errors.GetSegmentIdBySegmentName("liver false negative")
    fp = segment_mask(wiring.scene, maps.errors["good"], fp_id, volume)
    fn = segment_mask(wiring.scene, maps.errors["good"], fn_id, volume)
    np.testing.assert_array_equal(fp, (good_labels == 1) & (reference != 1))
    np.testing.assert_array_equal(fn, (reference == 1) & (good_labels != 1))
    agreement = slicer.util.arrayFromVolume(maps.agreement)
    assert agreement.max() <= 2 and agreement[good_labels > 0].min() >= 1
    grid = image_from_volume_node(volume)
    for row in maps.worst_errors[:5]:  # each centre lies in an error of its kind (oblique grid)
        lps = np.array([-row["ras"][0], -row["ras"][1], row["ras"][2], 1.0])
        index = tuple(np.round(np.linalg.inv(grid.index_to_physical()) @ lps)[:3][::-1].astype(int))
        model_labels = label_image_from_segmentation_node(
            result["segmentations"][["good", "short"].index(row["model"])], volume
        ).array
        value = {"liver": 1, "spleen": 2}[row["label"]]
        wrong = (
            (model_labels == value) & (reference != value)
            if "positive" in row["kind"]
            else ((reference == value) & (model_labels != value))
        )
        assert wrong[index], row
    assert maps.worst_table.GetNumberOfRows() == len(maps.worst_errors)
    # Where the two models disagree, largest first; each centre inside its region.
    short_labels = label_image_from_segmentation_node(result["segmentations"][1], volume).array
    assert maps.disagreements and [r["voxels"] for r in maps.disagreements] == sorted(
        (r["voxels"] for r in maps.disagreements), reverse=True
    )
    assert all(good_labels[r["index"]] != short_labels[r["index"]] for r in maps.disagreements)
    # The consensus measured against the reference like any model.
    majority = label_image_from_segmentation_node(maps.consensus["majority"], volume).array
    liver = next(row for row in maps.consensus_reports["majority"]["labels"] if row["name"] == "liver")
    expected = 2 * ((majority == 1) & (reference == 1)).sum() / max((majority == 1).sum() + (reference == 1).sum(), 1)
    assert liver["dice"] == pytest.approx(expected)
    volumes = [row["volume_ml"] for row in maps.worst_errors]
    assert volumes == sorted(volumes, reverse=True)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(wiring.scene)
    for node in [*result["segmentations"], result["table"], result["pairwise"], *maps.nodes()]:
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == maps.folder_item

    agreement = logic.compare(volume, models, device="cpu")
    rows = agreement["reports"]["agreement"]
    assert [(r["model_a"], r["model_b"], r["name"]) for r in rows] == [
        ("good", "short", "liver"),
        ("good", "short", "spleen"),
    ]
    a = label_image_from_segmentation_node(agreement["segmentations"][0], volume).array == 1
    b = label_image_from_segmentation_node(agreement["segmentations"][1], volume).array == 1
    if a.sum() + b.sum():
        assert rows[0]["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_a_cancelled_comparison_leaves_the_scene_as_it_was(trained_models, scene_and_case):
    _, models = trained_models
    wiring, volume, reference_node, _, _ = scene_and_case
    logic = CompareLogic(wiring.scene)
    before = node_count(wiring.scene)
    calls = []

    def cancel_during_second_model() -> bool:
        calls.append(1)
        return len(calls) > 1  # the first model's windows fit one batch: cancel in the second

    with pytest.raises(PredictionCancelled):
        logic.compare(volume, models, reference_node, device="cpu", cancel=cancel_during_second_model)
    assert node_count(wiring.scene) == before


def test_click_adds_the_structure_then_a_negative_click_removes_it(trained_models, scene_and_case):
    _, (good, _) = trained_models
    wiring, volume, _, image, _ = scene_and_case
    logic = ClickLogic(wiring.scene)
    predicted = Predictor(good, device="cpu").predict(image).label_image.array
    k, j, i = np.round(np.argwhere(predicted == 1).mean(axis=0)).astype(int)
    assert predicted[k, j, i] == 1
    lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
    point_ras = (-lps[0], -lps[1], lps[2])
    # An earlier edit far from the click (outside the window) must survive the click.
    far = (0, 0, 0) if j >= 12 else (15, 23, 23)  # the window spans 16 of the 24 rows
    earlier = np.zeros(image.spatial_shape, np.uint8)
    earlier[far] = 1
    target = segmentation_node_from_label_image(wiring.scene, image.with_array(earlier), {1: "liver"}, name="edits")
    segment_id = logic.click_to_segment(volume, good, point_ras, target, device="cpu")
    segment = target.GetSegmentation().GetSegment(segment_id)
    assert segment.GetName() == "liver"
    mask = label_image_from_segmentation_node(target, volume).array > 0
    # Expected: the connected liver of the one window around the click, placed on the volume grid.
    from scipy import ndimage

    window, region = Predictor(good, device="cpu").predict_window(image, (k, j, i))
    local = tuple(int(c - r.start) for c, r in zip((k, j, i), region))
    components, _ = ndimage.label(window == 1)
    expected = np.zeros(image.spatial_shape, bool)
    expected[region] = components == components[local]
    assert expected[k, j, i] and expected.sum() > 10
    np.testing.assert_array_equal(mask, expected | (np.indices(mask.shape).T == far).all(-1).T)
    # Into a new, empty segmentation: the segment is created and holds just the structure.
    fresh = wiring.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fresh")
    fresh.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    fresh_id = logic.click_to_segment(volume, good, point_ras, fresh, device="cpu")
    assert fresh.GetSegmentation().GetSegment(fresh_id).GetName() == "liver"
    np.testing.assert_array_equal(label_image_from_segmentation_node(fresh, volume).array > 0, expected)
    logic.click_to_segment(volume, good, point_ras, fresh, fresh_id, positive=False, device="cpu")
    assert not label_image_from_segmentation_node(fresh, volume).array.any()
    logic.click_to_segment(volume, good, point_ras, fresh, fresh_id, device="cpu")  # into the emptied segment
    np.testing.assert_array_equal(label_image_from_segmentation_node(fresh, volume).array > 0, expected)
    logic.click_to_segment(volume, good, point_ras, target, segment_id=segment_id, positive=False, device="cpu")
    after = label_image_from_segmentation_node(target, volume).array > 0
    assert not after[k, j, i] and after[far]  # the click's part is gone, the earlier edit is not
    with pytest.raises(AttentionSegError, match="outside the volume"):
        logic.click_to_segment(volume, good, (1e4, 0, 0), target, device="cpu")


def test_save_correction_adds_a_case_and_never_overwrites(trained_models, scene_and_case, tmp_path):
    dataset, (good, _) = trained_models
    copy = tmp_path / "data"
    shutil.copytree(dataset.parent, copy)
    wiring, volume, reference_node, image, reference = scene_and_case
    logic = CorrectionsLogic(wiring.scene)
    original = SegmentLogic(wiring.scene).segment(volume, good, device="cpu")
    before = {case.case_id for case in load_dataset(copy / "dataset.json").cases}

    result = logic.save_correction(volume, reference_node, copy / "dataset.json", original)
    assert result["case_id"] == "correction_001" and result["case_id"] not in before
    definition = load_dataset(copy / "dataset.json")
    assert {case.case_id for case in definition.cases} == before | {"correction_001"}
    assert validate_dataset(definition) == []
    saved_image = read_image(result["image_files"][0])
    np.testing.assert_array_equal(saved_image.array, image.array)
    np.testing.assert_allclose(saved_image.direction, image.direction, atol=1e-6)
    np.testing.assert_array_equal(read_image(result["label_file"]).array, reference)
    original_labels = read_image(result["original_file"]).array
    for value in (1, 2):
        a, b = original_labels == value, reference == value
        assert result["dice"][value] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    json.loads((copy / "dataset.json").read_text())

    again = logic.save_correction(volume, reference_node, copy / "dataset.json")
    assert again["case_id"] == "correction_002" and again["original_file"] is None and again["dice"] == {}
    undeclared = image.with_array(((reference == 1) * 5).astype(np.uint8))  # value 5, name unknown
    renamed = segmentation_node_from_label_image(wiring.scene, undeclared, {5: "tumour"}, name="odd")
    with pytest.raises(AttentionSegError, match="matches no label"):
        logic.save_correction(volume, renamed, copy / "dataset.json")


def test_the_job_logics_share_one_predictor_cache(trained_models, scene_and_case):
    _, (good, short) = trained_models
    wiring, volume, _, _, _ = scene_and_case
    made = []

    def counting_factory(path, device, tta):
        made.append((path.parent.name, device, tta))
        return Predictor(path, device=device, tta=tta)

    predictors = PredictorCache(counting_factory)
    SegmentLogic(wiring.scene, predictors).segment(volume, good, device="cpu")
    SegmentLogic(wiring.scene, predictors).segment(volume, good, device="cpu")
    CompareLogic(wiring.scene, predictors).compare(volume, [good, short], device="cpu")
    assert made == [("good", "cpu", False), ("short", "cpu", False)]
    assert predictors.get(good, "cpu") is predictors.get(good, "cpu")
    with pytest.raises(AttentionSegError, match="model file not found"):
        predictors.get(good.parent / "missing.pt")

    made.clear()
    jobs = SegmentationJobs.for_scene(wiring.scene, counting_factory)
    jobs.segment.segment(volume, good, device="cpu")
    jobs.compare.compare(volume, [good], device="cpu")
    segmentation = jobs.segment.segment(volume, good, device="cpu")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    center_ijk = [(size - 1) / 2 for size in volume.GetImageData().GetDimensions()]
    center_ras = ijk_to_ras.MultiplyPoint((*center_ijk, 1.0))[:3]
    jobs.click.click_to_segment(volume, good, center_ras, segmentation, device="cpu")
    assert made == [("good", "cpu", False)]  # one predictor for the three jobs


def test_background_run_adds_the_node_when_done_and_cancel_leaves_the_scene(trained_models, scene_and_case):
    _, (good, _) = trained_models
    wiring, volume, _, _, _ = scene_and_case
    logic = SegmentLogic(wiring.scene)
    runner = BackgroundSegmentation(wiring.scene)
    runner.start(volume, good, device="cpu")
    assert runner.wait(timeout_s=120) == "done", runner.message
    assert runner.progress == 1.0 and runner.result.GetName() == "good"
    blocking = logic.segment(volume, good, device="cpu")
    np.testing.assert_array_equal(
        label_image_from_segmentation_node(runner.result, volume).array,
        label_image_from_segmentation_node(blocking, volume).array,
    )
    before = node_count(wiring.scene)
    runner.start(volume, good, device="cpu")
    folder = runner.folder
    runner.cancel()
    assert runner.state == "cancelled" and node_count(wiring.scene) == before and not folder.exists()
    with pytest.raises(Exception, match="not found"):
        runner.start(volume, folder / "missing.pt")


def test_a_background_run_with_uncertainty_adds_the_map_and_the_likely_wrong_table(trained_models, scene_and_case):
    from AttentionSegLib.inference.uncertainty import LIKELY_WRONG_THRESHOLD
    from AttentionSegLib.slicer.mrml import image_from_volume_node

    _, (good, short) = trained_models
    wiring, volume, _, _, _ = scene_and_case
    runner = BackgroundSegmentation(wiring.scene)
    runner.start(volume, short, device="cpu", uncertainty=True)  # the 2-epoch model: doubtful regions
    assert runner.wait(timeout_s=120) == "done", runner.message
    nodes = runner.uncertainty
    mapped = image_from_volume_node(nodes.volume)
    source = image_from_volume_node(volume)
    # The map has the volume's grid (oblique, anisotropic) and equals the engine's own map.
    assert mapped.array.shape == source.array.shape
    for attribute in ("spacing", "origin", "direction"):
        assert np.allclose(getattr(mapped, attribute), getattr(source, attribute))
    engine = Predictor(short, device="cpu").predict(source, uncertainty="entropy").uncertainty.array
    np.testing.assert_allclose(mapped.array, engine, atol=1e-5)
    # The table: one row per region above the threshold, largest first, centres inside their region.
    table = nodes.table.GetTable()
    assert table.GetNumberOfRows() == len(nodes.regions) > 0
    volumes = [table.GetValueByName(row, "Volume (mL)").ToDouble() for row in range(table.GetNumberOfRows())]
    assert volumes == sorted(volumes, reverse=True)
    for region in nodes.regions:
        assert mapped.array[region["index"]] >= LIKELY_WRONG_THRESHOLD and region["mean"] >= LIKELY_WRONG_THRESHOLD
    # Without it, nothing more than the segmentation.
    runner.start(volume, short, device="cpu")
    assert runner.wait(timeout_s=120) == "done" and runner.uncertainty is None


def test_cancel_at_every_moment_of_segment_and_compare_leaves_the_scene_as_it_was(trained_models, scene_and_case):
    """The cancel point walks through every check the Logic makes (k = 1, 2, ... until the run
    finishes): each cancelled run leaves the scene's nodes as they were."""
    _, models = trained_models
    wiring, volume, reference_node, _, _ = scene_and_case
    jobs = {"segment": SegmentLogic(wiring.scene), "compare": CompareLogic(wiring.scene)}
    for name, logic in jobs.items():
        k, cancelled = 0, 0
        while True:
            k += 1
            before = node_count(wiring.scene)
            calls = []

            def cancel(calls=calls, k=k) -> bool:
                calls.append(1)
                return len(calls) >= k

            try:
                if name == "segment":
                    logic.segment(volume, models[0], device="cpu", cancel=cancel)
                else:
                    logic.compare(volume, models, reference_node, device="cpu", cancel=cancel)
            except PredictionCancelled:
                cancelled += 1
                assert node_count(wiring.scene) == before, f"{name} cancelled at check {k} changed the scene"
                continue
            assert node_count(wiring.scene) > before  # the run that was not cancelled added its nodes
            break
        assert cancelled >= 1, name


def test_cancel_of_a_background_segmentation_at_several_moments(trained_models, scene_and_case):
    import time

    _, (good, _) = trained_models
    wiring, volume, _, _, _ = scene_and_case
    runner = BackgroundSegmentation(wiring.scene)
    for delay_s in (0.0, 0.5, 2.0):
        before = node_count(wiring.scene)
        runner.start(volume, good, device="cpu")
        folder = runner.folder
        time.sleep(delay_s)
        runner.poll()
        if runner.state == "running":
            runner.cancel()
            assert runner.state == "cancelled"
            assert node_count(wiring.scene) == before and not folder.exists()
        else:  # finished before the cancel: its node, and nothing else, was added
            assert runner.state == "done" and node_count(wiring.scene) > before
