"""MRML glue against real MRML (slicer-core): geometry, segment names/colours/values, tables, metrics logic."""

import numpy as np
import pytest

from conftest import oblique_direction

slicer = pytest.importorskip("slicer", reason="slicer-core is installed by the test command")
vtk = pytest.importorskip("vtk")

from AttentionSegLib.data.phantoms import ellipsoid_label_map, perturbed_label_map  # noqa: E402
from AttentionSegLib.evaluation.metrics import evaluate_label_maps  # noqa: E402
from AttentionSegLib.io.image import Image  # noqa: E402
from AttentionSegLib.slicer.metrics_logic import MetricsLogic  # noqa: E402
from AttentionSegLib.slicer.mrml import (  # noqa: E402
    StandaloneScene,
    image_from_volume_node,
    label_image_from_segmentation_node,
    segmentation_node_from_label_image,
    table_node_from_metrics,
    volume_node_from_image,
)


@pytest.fixture
def scene():
    return StandaloneScene().scene


GEOMETRY = dict(spacing=(0.7, 0.9, 2.5), origin=(12.5, -40.0, 7.25), direction=oblique_direction())


def test_volume_round_trip_keeps_oblique_geometry(scene):
    image = Image(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), **GEOMETRY)
    node = volume_node_from_image(scene, image, "vol")
    back = image_from_volume_node(node)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-12)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-12)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-12)


def test_ras_in_node_is_lps_of_image_flipped(scene):
    image = Image(np.zeros((2, 3, 4), np.float32), **GEOMETRY)
    node = volume_node_from_image(scene, image, "vol")
    # Voxel (i, j, k) = (1, 2, 1) in physical space: LPS from the image, RAS from MRML.
    lps = image.index_to_physical() @ np.array([1, 2, 1, 1.0])
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    ras = np.array(ijk_to_ras.MultiplyPoint([1, 2, 1, 1.0]))
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)


def test_multichannel_image_becomes_vector_volume(scene):
    image = Image(np.random.default_rng(1).random((2, 4, 5, 6)).astype(np.float32), has_channels=True, **GEOMETRY)
    node = volume_node_from_image(scene, image, "channels")
    assert node.GetClassName() == "vtkMRMLVectorVolumeNode"
    back = image_from_volume_node(node)
    assert back.has_channels
    np.testing.assert_array_equal(back.array, image.array)


def test_label_image_to_segments_and_back_keeps_values_names_colours(scene):
    labels = ellipsoid_label_map((10, 16, 18), 3, seed=2)
    labels[labels == 2] = 7  # non-consecutive values must survive (MRML renumbers on a plain export)
    image = Image(labels, **GEOMETRY)
    volume = volume_node_from_image(scene, image.with_array(labels.astype(np.float32)), "vol")
    names = {1: "liver", 3: "kidney", 7: "spleen", 9: "pancreas"}
    colors = {1: (1.0, 0.0, 0.0), 3: (0.0, 1.0, 0.0), 7: (0.0, 0.0, 1.0), 9: (1.0, 1.0, 0.0)}
    node = segmentation_node_from_label_image(scene, image, names, colors, "Model A", reference_volume_node=volume)
    segmentation = node.GetSegmentation()
    segments = {
        segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
        for i in range(segmentation.GetNumberOfSegments())
    }
    assert set(segments) == {"liver", "kidney", "spleen", "pancreas"}  # pancreas: empty, ready to paint
    assert segments["spleen"].GetLabelValue() == 7
    assert segments["kidney"].GetColor() == pytest.approx((0.0, 1.0, 0.0))
    back = label_image_from_segmentation_node(node, volume)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-12)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-12)


def test_metrics_table_node(scene):
    reference = ellipsoid_label_map((8, 20, 20), 2, seed=1)
    report = evaluate_label_maps(perturbed_label_map(reference, seed=1), reference, (2.0, 1.0, 1.0), {1: "a", 2: "b"})
    table = table_node_from_metrics(scene, report)
    assert table.GetNumberOfRows() == 3  # two labels and the mean
    assert table.GetCellText(1, 1) == "b" and table.GetCellText(2, 1) == "mean of 2 labels"
    dice_column = table.GetTable().GetColumnByName("Dice")
    assert dice_column.GetValue(0) == pytest.approx(report["labels"][0]["dice"])
    assert table.GetTable().GetColumnByName("HD95 (mm)").GetValue(1) == pytest.approx(report["labels"][1]["hd95_mm"])


def test_logic_metrics_equal_engine_on_same_label_maps(scene):
    spacing_ijk = (0.8, 0.8, 2.0)
    reference = ellipsoid_label_map((12, 30, 32), 3, seed=5, spacing_mm=spacing_ijk[::-1])
    prediction = perturbed_label_map(reference, seed=6, spacing_mm=spacing_ijk[::-1])
    geometry = dict(spacing=spacing_ijk, origin=(5.0, 6.0, 7.0), direction=oblique_direction(35))
    volume = volume_node_from_image(scene, Image(reference.astype(np.float32), **geometry), "ct")
    names = {1: "a", 2: "b", 3: "c"}
    reference_node = segmentation_node_from_label_image(scene, Image(reference, **geometry), names, name="ref")
    # The prediction's segments come in another order and with other label values: matched by name.
    renamed = np.select([prediction == 1, prediction == 2, prediction == 3], [30, 10, 20], 0).astype(np.uint8)
    prediction_node = segmentation_node_from_label_image(
        scene, Image(renamed, **geometry), {30: "a", 10: "b", 20: "c"}, name="pred"
    )
    table, report = MetricsLogic(scene).compute_metrics(prediction_node, reference_node, volume)
    expected = evaluate_label_maps(prediction, reference, spacing_ijk[::-1], names)
    for got, want in zip(report["labels"], expected["labels"]):
        assert got["name"] == want["name"]
        for key in ("dice", "hd95_mm", "assd_mm", "nsd", "ref_ml", "pred_ml"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert table.GetNumberOfRows() == 4
