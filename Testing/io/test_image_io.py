"""Images keep their values and geometry through every supported format; bad files fail clearly."""

import numpy as np
import pytest

from AttentionSegLib.errors import GeometryMismatchError, ImageReadError, ImageWriteError
from AttentionSegLib.io.image import Image, check_same_grid, read_image, read_image_header, write_image
from conftest import oblique_direction

GEOMETRY = dict(spacing=(0.7, 0.9, 2.5), origin=(-101.25, 33.125, 17.0625), direction=oblique_direction())


def assert_same_geometry(a: Image, b: Image, tolerance: float) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tolerance)
    np.testing.assert_allclose(a.origin, b.origin, atol=tolerance)
    np.testing.assert_allclose(a.direction, b.direction, atol=tolerance)


@pytest.mark.parametrize(
    "suffix, tolerance",
    # NRRD and MetaImage store geometry as decimal text (exact); NIfTI as float32.
    [(".nrrd", 0.0), (".mha", 0.0), (".mhd", 0.0), (".nii.gz", 1e-5), (".nii", 1e-5)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_3d_round_trip_keeps_values_and_oblique_geometry(tmp_path, suffix, tolerance, dtype):
    rng = np.random.default_rng(0)
    image = Image((rng.random((5, 6, 7)) * 100).astype(dtype), **GEOMETRY)
    back = read_image(write_image(image, tmp_path / f"image{suffix}"))
    assert back.array.dtype == image.array.dtype and back.spatial_shape == (5, 6, 7)
    np.testing.assert_array_equal(back.array, image.array)
    assert_same_geometry(back, image, tolerance)


def test_multichannel_3d_is_one_4d_file_msd_style(tmp_path):
    array = np.random.default_rng(1).random((2, 4, 5, 6)).astype(np.float32)
    image = Image(array, has_channels=True, **GEOMETRY)
    path = write_image(image, tmp_path / "case.nii.gz")
    header = read_image_header(path)
    assert header.n_channels == 2 and header.spatial_dims == 3 and header.size == (6, 5, 4)
    back = read_image(path)
    assert back.has_channels and back.n_channels == 2
    np.testing.assert_array_equal(back.array, array)
    assert_same_geometry(back, image, 1e-5)


def test_rgb_png_becomes_three_channels(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (3, 20, 30)).astype(np.uint8)
    back = read_image(write_image(Image(rgb, has_channels=True), tmp_path / "photo.png"))
    assert back.spatial_dims == 2 and back.n_channels == 3 and back.spatial_shape == (20, 30)
    np.testing.assert_array_equal(back.array, rgb)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".nrrd"])
def test_2d_grey_round_trip(tmp_path, suffix):
    grey = np.arange(12 * 9, dtype=np.uint8).reshape(12, 9)
    back = read_image(
        write_image(Image(grey, spacing=(0.5, 0.25) if suffix != ".png" else ()), tmp_path / f"g{suffix}")
    )
    assert back.spatial_dims == 2
    np.testing.assert_array_equal(back.array, grey)


def test_spacing_in_array_order_is_reversed_index_order():
    image = Image(np.zeros((3, 4, 5)), spacing=(0.5, 0.75, 3.0))
    assert image.spacing_array_order == (3.0, 0.75, 0.5)
    assert image.voxel_volume_ml == pytest.approx(0.5 * 0.75 * 3.0 / 1000)


def test_missing_file_names_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing\.nii\.gz: file not found"):
        read_image(tmp_path / "missing.nii.gz")


def test_corrupt_file_is_one_clear_line(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unsupported_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        read_image(path)


def test_write_refuses_to_overwrite_when_asked(tmp_path):
    path = write_image(Image(np.zeros((3, 3), np.uint8)), tmp_path / "a.nrrd")
    before = path.read_bytes()
    with pytest.raises(ImageWriteError, match="exists"):
        write_image(Image(np.ones((3, 3), np.uint8)), path, overwrite=False)
    assert path.read_bytes() == before


def test_png_cannot_hold_floats_and_nothing_is_left_behind(tmp_path):
    with pytest.raises(ImageWriteError, match="png"):
        write_image(Image(np.zeros((3, 3), np.float32)), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_grid_mismatch_is_described():
    a = Image(np.zeros((4, 5, 6)), spacing=(1, 1, 1))
    b = Image(np.zeros((4, 5, 6)), spacing=(1, 1, 2), origin=(0, 0, 3))
    with pytest.raises(GeometryMismatchError, match="spacing .* origin differs by 3 mm"):
        check_same_grid(a, b, "pred", "ref")


def test_invalid_geometry_is_rejected():
    with pytest.raises(ValueError, match="spacing"):
        Image(np.zeros((3, 3)), spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="singular"):
        Image(np.zeros((3, 3)), direction=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="spatial axes"):
        Image(np.zeros(3))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, suffix):
    path = write_image(Image(np.ones((20, 20, 20), np.float32)), tmp_path / f"whole{suffix}")
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="truncated|damaged"):
        read_image(truncated)
