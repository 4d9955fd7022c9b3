"""DICOM and terminology in the MRML glue (real MRML from slicer-core): segments carry the codes
Slicer's DICOM export writes, and a DICOM SEG loads as a reference segmentation on a volume."""

import numpy as np
import pytest

from conftest import oblique_direction

slicer = pytest.importorskip("slicer", reason="slicer-core is installed by the test command")

from AttentionSegLib.data.phantoms import ellipsoid_label_map, phantom_image, write_dicom_series  # noqa: E402
from AttentionSegLib.io.dicom_seg import write_dicom_seg  # noqa: E402
from AttentionSegLib.io.dicom_series import read_dicom_series  # noqa: E402
from AttentionSegLib.io.image import Image  # noqa: E402
from AttentionSegLib.io.terminology import (  # noqa: E402
    Code,
    SegmentTerminology,
    generic_terminology,
    slicer_terminology_entry,
)
from AttentionSegLib.slicer.metrics_logic import MetricsLogic  # noqa: E402
from AttentionSegLib.slicer.mrml import (  # noqa: E402
    StandaloneScene,
    label_image_from_segmentation_node,
    segmentation_node_from_label_image,
    volume_node_from_image,
)
from AttentionSegLib.slicer.reference_file import reference_segmentation_from_file  # noqa: E402

LIVER = SegmentTerminology(Code("SCT", "85756007", "Tissue"), Code("SCT", "10200004", "Liver"))
KIDNEY = SegmentTerminology(
    Code("SCT", "123037004", "Anatomical Structure"),
    Code("SCT", "64033007", "Kidney"),
    modifier=Code("SCT", "7771000", "Left"),
    region=Code("SCT", "818981001", "Abdomen"),
)


@pytest.mark.parametrize("terminology", [LIVER, KIDNEY, generic_terminology("tumour core", 3)])
def test_our_terminology_entry_is_the_string_slicer_serializes(terminology):
    logic = slicer.vtkSlicerTerminologiesModuleLogic

    def value_scheme_meaning(code):  # Slicer's argument order
        return (code.value, code.scheme, code.meaning) if code is not None else ("", "", "")

    expected = logic.SerializeTerminologyEntry(
        "Segmentation category and type - AttentionSeg",
        *value_scheme_meaning(terminology.category),
        *value_scheme_meaning(terminology.type),
        *value_scheme_meaning(terminology.modifier),
        "Anatomic codes - DICOM master list" if terminology.region else "",
        *value_scheme_meaning(terminology.region),
        *value_scheme_meaning(None),
    )
    assert slicer_terminology_entry(terminology) == expected
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(slicer_terminology_entry(terminology), entry)
    assert entry.GetTypeObject().GetCodeValue() == terminology.type.value
    assert entry.GetCategoryObject().GetCodingSchemeDesignator() == terminology.category.scheme


def test_segments_made_from_a_models_labels_carry_its_terminology():
    scene = StandaloneScene().scene
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[1:3, 1:4, 1:4] = 1
    node = segmentation_node_from_label_image(
        scene, Image(labels), {1: "liver", 2: "kidney"}, terminology={1: LIVER, 2: KIDNEY}
    )
    segmentation = node.GetSegmentation()
    by_name = {segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i) for i in range(2)}
    assert by_name["liver"].GetTerminology() == slicer_terminology_entry(LIVER)
    assert by_name["kidney"].GetTerminology() == slicer_terminology_entry(KIDNEY)  # empty segment too


def test_a_dicom_seg_loads_as_a_reference_on_the_volume_and_measures_like_the_label_map(tmp_path):
    spacing = (0.8, 0.9, 2.0)
    label_map = ellipsoid_label_map((8, 22, 26), 2, seed=4, spacing_mm=spacing[::-1])
    hu = np.round(phantom_image(label_map, seed=4) * 300.0)
    write_dicom_series(Image(hu, spacing, (3.0, -7.0, 11.0), oblique_direction(30)), tmp_path / "series")
    image, series = read_dicom_series(tmp_path / "series")
    labels = [{"value": 1, "name": "liver", "color": [1, 0, 0]}, {"value": 2, "name": "kidney", "color": [0, 1, 0]}]
    seg_path = write_dicom_seg(
        image.with_array(label_map),
        series,
        tmp_path / "ref.dcm",
        labels,
        {1: LIVER},
        algorithm_name="a",
        algorithm_version="1",
    )
    scene = StandaloneScene().scene
    volume = volume_node_from_image(scene, image, "ct")
    reference = reference_segmentation_from_file(scene, seg_path, volume)
    segmentation = reference.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    assert names == ["kidney", "liver"]
    liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver"))
    assert "SCT^10200004^Liver" in liver.GetTerminology()
    back = label_image_from_segmentation_node(reference, volume, {"liver": 1, "kidney": 2})
    np.testing.assert_array_equal(back.array, label_map)
    # metrics of the label map against the SEG-loaded reference: Dice 1
    prediction = segmentation_node_from_label_image(scene, image.with_array(label_map), {1: "liver", 2: "kidney"})
    _, report = MetricsLogic(scene).compute_metrics(prediction, reference, volume)
    assert [row["dice"] for row in report["labels"]] == [1.0, 1.0]
    # a SEG off the volume's grid: one line, and the scene keeps what it had
    moved = Image(hu, spacing, (3.4, -7.0, 11.0), oblique_direction(30))
    other = volume_node_from_image(scene, moved, "moved")
    n_nodes = scene.GetNumberOfNodes()
    with pytest.raises(Exception, match="do not lie on the image's voxel grid"):
        reference_segmentation_from_file(scene, seg_path, other)
    assert scene.GetNumberOfNodes() == n_nodes
