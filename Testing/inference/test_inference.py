"""The predictor: output against a direct forward pass, geometry kept, resampling, TTA, one-window
prediction, progress and cancellation, input checks, largest components, and .seg.nrrd files."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from AttentionSegLib.data.preprocessing import Normalization
from AttentionSegLib.errors import GeometryMismatchError
from AttentionSegLib.inference.model_file import ModelFile
from AttentionSegLib.inference.predictor import (
    InputMismatchError,
    PredictionCancelled,
    Predictor,
    keep_largest_components,
)
from AttentionSegLib.io.image import Image, read_image
from AttentionSegLib.io.segmentation_file import read_segment_names, write_label_image
from AttentionSegLib.models import build_model
from conftest import oblique_direction

LABELS = [
    {"value": 0, "name": "background", "color": [0, 0, 0]},
    {"value": 3, "name": "liver", "color": [0.8, 0.5, 0.3]},
    {"value": 7, "name": "spleen", "color": [0.4, 0.2, 0.9]},
]


def random_model(
    patch=(16, 16, 16),
    target_spacing=(1.0, 1.0, 1.0),
    channels=("MRI",),
    labels=LABELS,
    activation="softmax",
    clinical=None,
    seed=0,
) -> ModelFile:
    """A model file around a compact UNet with random weights (what it computes is checked
    against a direct forward pass, so the weights need not be trained)."""
    torch.manual_seed(seed)
    spec = {
        "name": "unet",
        "spatial_dims": len(patch),
        "in_channels": len(channels),
        "out_channels": 1 if activation == "sigmoid" else len(labels),
        "patch_size": list(patch),
        "clinical_features": 0,
        "options": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    }
    network = build_model(
        "unet", spec["spatial_dims"], spec["in_channels"], spec["out_channels"], patch, **spec["options"]
    )
    return ModelFile(
        network=spec,
        channel_names=list(channels),
        labels=labels,
        output_activation=activation,
        preprocessing={
            "target_spacing": list(target_spacing),
            "normalization": {"kind": "mri", "mean": [], "std": [], "clip_low": [], "clip_high": []},
            "image_kind": "mri",
            "slice_wise": False,
            "patch_size": list(patch),
        },
        clinical=clinical or {},
        state_dict=network.state_dict(),
    )


def volume(shape=(12, 14, 10), spacing=(0.9, 1.1, 1.3), seed=0) -> Image:
    rng = np.random.default_rng(seed)
    return Image(
        rng.normal(100, 20, shape).astype(np.float32),
        spacing=spacing,
        origin=(-12.5, 30.0, 7.25),
        direction=oblique_direction(),
    )


def direct_labels(model: ModelFile, image: Image) -> np.ndarray:
    """The reference: z-score, zero-pad to the patch (centred, as MONAI's sliding window pads), one
    forward pass, crop, argmax, map values."""
    network = model.build_network()
    array = Normalization("mri").apply(image.array[None].astype(np.float32))
    patch = model.preprocessing["patch_size"]
    tensor = torch.from_numpy(array)[None]
    before = [(p - size) // 2 for size, p in zip(array.shape[1:], patch)]
    pad = [
        v for size, p, b in zip(reversed(array.shape[1:]), reversed(patch), reversed(before)) for v in (b, p - size - b)
    ]
    with torch.no_grad():
        logits = network(F.pad(tensor, pad))[0]
    logits = logits[(slice(None), *(slice(b, b + s) for b, s in zip(before, array.shape[1:])))]
    return np.asarray(model.label_values)[logits.argmax(0).numpy()]


def test_prediction_equals_a_direct_forward_pass_and_keeps_the_geometry():
    model = random_model()
    image = volume(spacing=(1.0, 1.0, 1.0))
    prediction = Predictor(model, device="cpu").predict(image)
    labels = prediction.label_image
    assert labels.array.shape == image.array.shape and labels.array.dtype == np.uint8
    assert labels.spacing == image.spacing and labels.origin == image.origin
    np.testing.assert_array_equal(labels.direction, image.direction)
    np.testing.assert_array_equal(labels.array, direct_labels(model, image))
    assert len(np.unique(labels.array)) > 1  # random weights still give several labels
    assert prediction.seconds["network"] > 0 and prediction.device == "cpu"


def test_single_window_prediction_is_exact_when_the_image_fills_the_patch():
    model = random_model()
    image = volume(shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    labels = Predictor(model, device="cpu").predict(image).label_image.array
    np.testing.assert_array_equal(labels, direct_labels(model, image))


def test_resampling_to_the_model_spacing_and_back_to_the_input_grid():
    model = random_model(target_spacing=(2.0, 2.0, 2.0))
    image = volume(shape=(20, 24, 18), spacing=(1.0, 1.0, 1.0))
    predictor = Predictor(model, device="cpu")
    array, shape = predictor.preprocess(predictor.stack_channels(image))
    assert array.shape == (1, 10, 12, 9) and shape == (20, 24, 18)  # 1 mm -> 2 mm, array order
    labels = predictor.predict(image).label_image
    assert labels.spatial_shape == (20, 24, 18) and labels.spacing == image.spacing


def test_tta_averages_the_logits_of_every_mirrored_copy():
    model = random_model()
    predictor = Predictor(model, device="cpu", tta=True)
    window = torch.randn(2, 1, 16, 16, 16)
    network = model.build_network()
    expected = torch.zeros(2, 3, 16, 16, 16)
    axes_sets = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    with torch.no_grad():
        for axes in axes_sets:
            flipped = window.flip(axes) if axes else window
            logits = network(flipped)
            expected += logits.flip(axes) if axes else logits
        result = predictor.segmenter.window_function(None)(window)
    torch.testing.assert_close(result, expected / len(axes_sets))


def test_sigmoid_models_threshold_at_one_half():
    labels = [
        {"value": 0, "name": "background", "color": [0, 0, 0]},
        {"value": 255, "name": "lesion", "color": [0.1, 0.2, 0.3]},
    ]
    model = random_model(labels=labels, activation="sigmoid")
    image = volume(shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    network = model.build_network()
    array = Normalization("mri").apply(image.array[None])
    with torch.no_grad():
        expected = (torch.sigmoid(network(torch.from_numpy(array)[None]))[0, 0] > 0.5).numpy() * 255
    result = Predictor(model, device="cpu").predict(image).label_image.array
    np.testing.assert_array_equal(result, expected)


def test_progress_reaches_one_and_cancel_stops_between_windows():
    model = random_model(patch=(8, 8, 8))
    image = volume(shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0))
    predictor = Predictor(model, device="cpu", sw_batch_size=2)
    fractions: list[float] = []
    predictor.predict(image, progress=fractions.append)
    assert len(fractions) > 3 and fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    calls = []

    def cancel_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(PredictionCancelled):
        predictor.predict(image, cancel=cancel_after_two)
    assert len(calls) == 3


def test_inputs_that_do_not_fit_the_model_are_refused_with_a_clear_message():
    two_channel = Predictor(random_model(channels=("FLAIR", "T1c")), device="cpu")
    image = volume()
    with pytest.raises(InputMismatchError, match=r"1 channel\(s\), the model takes 2 \(FLAIR, T1c\)"):
        two_channel.predict(image)
    moved = Image(image.array, image.spacing, (0.0, 0.0, 0.0), image.direction)
    with pytest.raises(GeometryMismatchError, match="different voxel grids"):
        two_channel.predict([image, moved], names=["flair.nii.gz", "t1c.nii.gz"])
    stacked = two_channel.predict([image, image]).label_image
    assert stacked.spatial_shape == image.spatial_shape
    with pytest.raises(InputMismatchError, match="2D image, but this model segments 3D"):
        Predictor(random_model(), device="cpu").predict(Image(np.zeros((20, 20), np.float32)), names=["photo.png"])


def test_clinical_values_are_normalised_with_the_training_statistics():
    clinical = {"variables": ["age", "bmi"], "mean": [60.0, 25.0], "std": [10.0, 5.0]}
    predictor = Predictor(random_model(clinical=clinical), device="cpu")
    torch.testing.assert_close(predictor.clinical_vector({"age": 70, "bmi": 20}), torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(predictor.clinical_vector({"age": 50}), torch.tensor([[-1.0, 0.0]]))  # missing: mean
    with pytest.raises(InputMismatchError, match="unknown clinical"):
        predictor.clinical_vector({"weight": 80})
    with pytest.raises(InputMismatchError, match="1 clinical value"):
        predictor.clinical_vector([1.0])


def test_one_window_covers_the_click_and_matches_full_prediction_when_the_image_fits():
    model = random_model()
    predictor = Predictor(model, device="cpu")
    small = volume(shape=(16, 16, 16), spacing=(1.0, 1.0, 1.0))
    labels, region = predictor.predict_window(small, (8, 8, 8))
    assert region == (slice(0, 16),) * 3
    np.testing.assert_array_equal(labels, predictor.predict(small).label_image.array)
    large = volume(shape=(40, 50, 30), spacing=(0.5, 1.0, 2.0))  # spacing (i, j, k) = 0.5, 1, 2 mm
    labels, region = predictor.predict_window(large, (39, 0, 20))
    # 16 voxels of 1 mm: 8 slices of 2 mm, 16 rows of 1 mm, 32 columns of 0.5 mm (the image has 30);
    # the window stays inside the image.
    assert region == (slice(32, 40), slice(0, 16), slice(0, 30))
    assert labels.shape == (8, 16, 30)


def test_keep_largest_component_per_label():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:4, 1:4, 1:4] = 3  # 27 voxels
    labels[6:8, 6:8, 6:8] = 3  # 8 voxels: removed
    labels[0, 9, 9] = 7  # the only component of 7: kept
    result = keep_largest_components(labels, [3, 7])
    assert (result == 3).sum() == 27 and result[6, 6, 6] == 0 and result[0, 9, 9] == 7


def test_seg_nrrd_names_colours_and_values_survive_and_geometry_is_kept(tmp_path):
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:3, 2:5, 3:9] = 3
    labels[4, 6, 1] = 7
    image = Image(labels, spacing=(0.7, 0.8, 2.5), origin=(1.0, 2.0, 3.0), direction=oblique_direction())
    path = write_label_image(image, tmp_path / "case.seg.nrrd", LABELS)
    assert read_segment_names(path) == {3: "liver", 7: "spleen"}
    back = read_image(path)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-12)
    np.testing.assert_allclose(back.spacing, image.spacing, rtol=1e-12)  # NRRD stores spacing x direction
    np.testing.assert_allclose(back.origin, image.origin, rtol=1e-12)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert reader.GetMetaData("Segment0_Extent") == "3 8 2 4 1 2"  # i0 i1 j0 j1 k0 k1
    assert reader.GetMetaData("Segment1_Color") == "0.4 0.2 0.9"
    with pytest.raises(Exception, match="exists"):
        write_label_image(image, path, LABELS)


def test_seg_nrrd_opens_in_slicer_as_named_segments(tmp_path):
    slicer = pytest.importorskip("slicer")
    labels = np.zeros((6, 8, 10), np.uint8)
    labels[1:3, 2:5, 3:9] = 3
    labels[4, 6, 1] = 7
    path = write_label_image(Image(labels, spacing=(0.7, 0.8, 2.5)), tmp_path / "case.seg.nrrd", LABELS)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    names = {
        segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i).GetLabelValue()
        for i in range(segmentation.GetNumberOfSegments())
    }
    assert names == {"liver": 3, "spleen": 7}
    color = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver")).GetColor()
    np.testing.assert_allclose(color, [0.8, 0.5, 0.3], atol=1e-6)
