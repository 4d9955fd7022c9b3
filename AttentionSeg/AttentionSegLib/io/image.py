"""Images that carry their geometry, and reading/writing them through SimpleITK.

Conventions (the same as SimpleITK's and Slicer's numpy views, so arrays move between them
without transposes):

- ``Image.array`` is in *array order*: ``(k, j, i)`` for a volume, ``(j, i)`` for a 2D image, with
  an optional leading channel axis ``(C, k, j, i)``.
- ``spacing`` (mm), ``origin`` (mm) and ``direction`` follow the *index order* ``(i, j, k)`` of
  ITK: ``spacing[0]`` is the size of a voxel along ``i`` (the last array axis). ``origin`` is the
  physical position of the centre of voxel ``(0, 0, 0)`` in LPS coordinates (DICOM/ITK). Column
  ``c`` of ``direction`` is the LPS unit vector of index axis ``c``.
- :attr:`Image.spacing_array_order` gives the spacing per array axis, which is what the metrics
  take.

Geometry survives a round trip through NRRD and MetaImage (MHA/MHD) bit for bit. NIfTI stores
its geometry as 32-bit floats, so a NIfTI round trip keeps it to about 1e-7 relative (1e-5 mm).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from AttentionSegLib.errors import GeometryMismatchError, ImageReadError, ImageWriteError
from AttentionSegLib.io.atomic import atomic_path

__all__ = [
    "Image",
    "SUPPORTED_SUFFIXES",
    "image_suffix",
    "read_image",
    "read_image_header",
    "open_image_header",
    "write_image",
    "write_sitk_atomic",
    "ImageHeader",
    "check_same_grid",
    "check_finite",
    "grid_differences",
]

# Lower-case file endings we read and write; multi-part endings first so that
# ".nii.gz" wins over ".gz".
SUPPORTED_SUFFIXES = (
    ".seg.nrrd",
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
)
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# A DICOM series is given as its folder; single .dcm files are DICOM SEG references.
DICOM_SUFFIXES = (".dcm", ".dicom")

# Two grids are "the same" within these tolerances. They are loose enough for the float32
# geometry of NIfTI headers and tight enough that no voxel moves by a visible amount.
SPACING_RELATIVE_TOLERANCE = 1e-4
ORIGIN_TOLERANCE_VOXELS = 1e-3
DIRECTION_TOLERANCE = 1e-4


def image_suffix(path: str | os.PathLike) -> str:
    """The supported file ending of ``path`` (lower case, e.g. ``".nii.gz"``), or ``""``."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


@dataclass(eq=False)
class Image:
    """A numpy array and the geometry that places it in patient space.

    Args:
        array: voxel values in array order (``(k, j, i)`` or ``(j, i)``), with a leading channel
            axis when ``has_channels`` is true.
        spacing: voxel size in mm per index axis ``(i, j[, k])``. Default: 1 mm.
        origin: LPS position in mm of the centre of the first voxel. Default: 0.
        direction: ``d x d`` matrix, column ``c`` is the LPS direction of index axis ``c``.
            Default: identity.
        has_channels: whether axis 0 of ``array`` is a channel axis.

    Raises:
        ValueError: when the array has fewer than 2 or more than 3 spatial axes, or the geometry
            does not have one entry per spatial axis, or the direction is not invertible.
    """

    array: np.ndarray
    spacing: tuple[float, ...] = ()
    origin: tuple[float, ...] = ()
    direction: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    has_channels: bool = False

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        dims = self.array.ndim - (1 if self.has_channels else 0)
        if dims not in (2, 3):
            raise ValueError(f"an image needs 2 or 3 spatial axes, got array shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing) if len(self.spacing) else (1.0,) * dims
        self.origin = tuple(float(o) for o in self.origin) if len(self.origin) else (0.0,) * dims
        direction = np.asarray(self.direction, dtype=np.float64)
        self.direction = np.eye(dims) if direction.size == 0 else direction.reshape(dims, dims)
        if len(self.spacing) != dims or len(self.origin) != dims:
            raise ValueError(
                f"geometry has {len(self.spacing)} spacing and {len(self.origin)} origin entries "
                f"for {dims} spatial axes"
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if abs(np.linalg.det(self.direction)) < 1e-6:
            raise ValueError(f"direction matrix is singular: {self.direction.tolist()}")

    @property
    def spatial_dims(self) -> int:
        return len(self.spacing)

    @property
    def n_channels(self) -> int:
        return int(self.array.shape[0]) if self.has_channels else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the voxel grid in array order (without the channel axis)."""
        return tuple(self.array.shape[1:] if self.has_channels else self.array.shape)

    @property
    def spacing_array_order(self) -> tuple[float, ...]:
        """Spacing in mm per array axis: the reverse of :attr:`spacing`."""
        return tuple(reversed(self.spacing))

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm^3 / 1000); for 2D images, the area in mm^2 / 1000."""
        return float(np.prod(self.spacing)) / 1000.0

    def channel(self, index: int) -> Image:
        """One channel as a single-channel image on the same grid."""
        if not self.has_channels:
            if index != 0:
                raise IndexError(f"image has one channel, asked for channel {index}")
            return self
        return self.with_array(self.array[index], has_channels=False)

    def with_array(self, array: np.ndarray, has_channels: bool | None = None) -> Image:
        """A new image on the same grid holding ``array``."""
        return Image(
            array,
            self.spacing,
            self.origin,
            self.direction.copy(),
            self.has_channels if has_channels is None else has_channels,
        )

    def index_to_physical(self) -> np.ndarray:
        """Homogeneous ``(d+1) x (d+1)`` matrix mapping index ``(i, j, k)`` to LPS mm."""
        d = self.spatial_dims
        matrix = np.eye(d + 1)
        matrix[:d, :d] = self.direction @ np.diag(self.spacing)
        matrix[:d, d] = self.origin
        return matrix

    def to_sitk(self) -> sitk.Image:
        """A SimpleITK image (vector pixels for 2D channels, a 4D series for 3D channels)."""
        if not self.has_channels:
            result = sitk.GetImageFromArray(self.array, isVector=False)
        elif self.spatial_dims == 2:
            result = sitk.GetImageFromArray(np.moveaxis(self.array, 0, -1), isVector=True)
        else:
            # MSD convention: a 3D multi-channel case is one 4D image, channel = 4th index axis.
            result = sitk.GetImageFromArray(self.array, isVector=False)
            result.SetSpacing(self.spacing + (1.0,))
            result.SetOrigin(self.origin + (0.0,))
            direction = np.eye(4)
            direction[:3, :3] = self.direction
            result.SetDirection(direction.ravel().tolist())
            return result
        result.SetSpacing(self.spacing)
        result.SetOrigin(self.origin)
        result.SetDirection(self.direction.ravel().tolist())
        return result

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Image:
        """Convert a SimpleITK image; vector pixels and a 4th axis become channels."""
        array = sitk.GetArrayFromImage(image)
        dims = image.GetDimension()
        spacing, origin = image.GetSpacing(), image.GetOrigin()
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dims, dims)
        if image.GetNumberOfComponentsPerPixel() > 1:
            return cls(np.moveaxis(array, -1, 0), spacing, origin, direction, has_channels=True)
        if dims == 4:
            return cls(array, spacing[:3], origin[:3], direction[:3, :3], has_channels=True)
        return cls(array, spacing, origin, direction)


@dataclass(frozen=True)
class ImageHeader:
    """What a file says about its grid, read without loading the voxels."""

    path: Path
    spatial_dims: int
    size: tuple[int, ...]  # index order (i, j, k)
    n_channels: int
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from AttentionSegLib.io.dicom_seg import is_dicom_seg, is_readable_dicom

        if is_dicom_seg(path):
            raise ImageReadError(f"{path}: a DICOM SEG (a segmentation); give it where a reference label map goes")
        if not is_readable_dicom(path):
            raise ImageReadError(f"{path}: not a readable DICOM file (damaged, truncated or not DICOM)")
        raise ImageReadError(f"{path}: a single DICOM file; give the folder of its series instead")
    if not image_suffix(path):
        raise ImageReadError(
            f"{path}: unsupported file type (supported: {', '.join(SUPPORTED_SUFFIXES)}, or a DICOM series folder)"
        )


def _short_reason(error: RuntimeError) -> str:
    """One line out of SimpleITK's multi-line exception text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown error"
    if "Exception thrown in SimpleITK" in reason or len(reason) > 200:
        reason = "the file is damaged or not in the format its name says"
    return reason


def open_image_header(path: Path) -> sitk.ImageFileReader:
    """A SimpleITK reader holding the file's header (geometry and metadata), voxels not read.

    Raises:
        ImageReadError: the file is missing, of an unsupported type, or its header is unreadable.
    """
    _check_readable(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(f"{path}: cannot read image header: {_short_reason(error)}") from None
    return reader


def read_image_header(path: str | os.PathLike, series_uid: str | None = None) -> ImageHeader:
    """Read the grid of an image file (or DICOM series folder) without its voxels.

    Raises:
        ImageReadError: the file is missing, of an unsupported type, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        from AttentionSegLib.io.dicom_series import select_series, series_header

        series = select_series(path, series_uid)
        size, spacing, origin, direction = series_header(series)
        n_channels = int(series.headers[0].get("SamplesPerPixel", 1) or 1)
        return ImageHeader(path, 3, size, n_channels, spacing, origin, direction)
    reader = open_image_header(path)
    dims = reader.GetDimension()
    size = tuple(int(s) for s in reader.GetSize())
    spacing, origin = reader.GetSpacing(), reader.GetOrigin()
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(dims, dims)
    n_channels = int(reader.GetNumberOfComponents())
    if dims == 4 and n_channels == 1:
        n_channels, size = size[3], size[:3]
        spacing, origin, direction, dims = spacing[:3], origin[:3], direction[:3, :3], 3
    # A 2D photograph stored as a 3D file with one slice still is a 2D image.
    if dims == 3 and size[2] == 1 and image_suffix(path) in PHOTO_SUFFIXES:
        size, spacing, origin, direction, dims = size[:2], spacing[:2], origin[:2], direction[:2, :2], 2
    return ImageHeader(path, dims, size, n_channels, tuple(spacing), tuple(origin), direction)


def _check_fits_in_memory(reader: sitk.ImageFileReader, path: Path) -> None:
    """Refuse a file whose header claims more voxels than this machine could hold, before ITK
    tries to allocate them (a damaged or hostile header would otherwise exhaust memory)."""
    from AttentionSegLib.resources import available_memory_bytes, format_bytes

    size = [int(s) for s in reader.GetSize()]
    component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    needed = int(np.prod(size, dtype=np.float64) * max(1, reader.GetNumberOfComponents()) * component)
    available = available_memory_bytes()
    if needed > available:
        raise ImageReadError(
            f"{path}: the header claims {'x'.join(map(str, size))} voxels ({format_bytes(needed)}), "
            f"more than the {format_bytes(available)} of memory available"
        )


# NIfTI datatype codes of floating-point voxels, and their numpy types (byte order added on use).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(data offset, data bytes, numpy float type or None) from a NIfTI-1 header, or None when it
    is not NIfTI-1."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            datatype = struct.unpack(order + "h", header[70:72])[0]
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            n_dims = max(1, min(int(dims[0]), 7))
            voxels = int(np.prod([max(1, d) for d in dims[1 : n_dims + 1]], dtype=np.int64))
            dtype = order + _NIFTI_FLOATS[datatype] if datatype in _NIFTI_FLOATS else None
            return offset, voxels * max(bitpix, 8) // 8, dtype
    return None


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader fills a truncated file with zeros and reads NaN and infinite voxels as 0,
    without a word; refuse such files (the voxels are streamed once, 16 MB at a time)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    non_finite = 0
    try:
        with opener(path, "rb") as stream:
            layout = _nifti_layout(stream.read(348))
            if layout is None:
                return
            offset, n_bytes, dtype = layout
            expected = offset + n_bytes
            available = 348
            item = np.dtype(dtype).itemsize if dtype else 1
            carry = b""
            while available < expected:
                chunk = stream.read(min(1 << 24, expected - available))
                if not chunk:
                    break
                data_start = max(0, offset - available)  # the header's tail is not voxels
                available += len(chunk)
                if dtype and data_start < len(chunk):
                    data = carry + chunk[data_start:]
                    usable = len(data) - len(data) % item
                    values = np.frombuffer(data[:usable], dtype=dtype)
                    non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
                    carry = data[usable:]
    except (OSError, EOFError, zlib.error) as error:
        raise ImageReadError(f"{path}: file is damaged or truncated ({error})") from None
    if available < expected:
        raise ImageReadError(f"{path}: file is truncated ({available} of {expected} bytes)")
    if non_finite:
        raise ImageReadError(
            f"{path}: {non_finite} voxel(s) are NaN or infinite (not finite; ITK would read them as 0); "
            "fix or mask them first"
        )


def read_image(path: str | os.PathLike, series_uid: str | None = None) -> Image:
    """Read an image file, or a DICOM series given as its folder, with its geometry.

    NIfTI, NRRD, MHA/MHD, PNG, JPEG and TIFF are read through SimpleITK. RGB(A) pixels and the 4th
    axis of a 4D NIfTI (MSD multi-channel cases) become a leading channel axis. A folder is read
    as a DICOM series (:mod:`AttentionSegLib.io.dicom_series`; ``series_uid`` chooses one when it
    holds several); what the reader had to correct is reported as an :class:`InputWarning`.

    Raises:
        ImageReadError: one line naming the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        from AttentionSegLib.io.dicom_series import read_dicom_series

        return read_dicom_series(path, series_uid)[0]
    _check_readable(path)
    if image_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    _check_fits_in_memory(open_image_header(path), path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ImageReadError(f"{path}: cannot read image: {_short_reason(error)}") from None
    if image.GetDimension() not in (2, 3, 4):
        raise ImageReadError(f"{path}: {image.GetDimension()}D images are not supported (2D, 3D or 4D)")
    if image.GetDimension() == 3 and image.GetSize()[2] == 1 and image_suffix(path) in PHOTO_SUFFIXES:
        image = image[:, :, 0]
    return Image.from_sitk(image)


def write_image(image: Image, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``image`` atomically: a partial file never appears under ``path``.

    Args:
        image: what to write. 3D multi-channel images become a 4D image (MSD convention).
        path: destination; its ending picks the format.
        overwrite: when false, an existing file is an error instead of being replaced.

    Raises:
        ImageWriteError: unsupported ending or content, or ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    suffix = image_suffix(path)
    if not suffix or suffix == ".seg.nrrd":
        raise ImageWriteError(f"{path}: cannot write this file type (use .nii.gz, .nrrd, .mha or .png)")
    if path.exists() and not overwrite:
        raise ImageWriteError(f"{path}: file exists, refusing to overwrite it")
    if suffix in PHOTO_SUFFIXES:
        if image.spatial_dims != 2 or image.array.dtype not in (np.uint8, np.uint16):
            raise ImageWriteError(
                f"{path}: {suffix} holds 2D 8- or 16-bit images, got {image.spatial_dims}D {image.array.dtype}"
            )
    if not path.parent.exists():
        raise ImageWriteError(f"{path}: folder {path.parent} does not exist")
    return write_sitk_atomic(image.to_sitk(), path, suffix, compress=suffix in (".nii.gz", ".nrrd", ".mha"))


def write_sitk_atomic(image: sitk.Image, path: Path, suffix: str, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (:func:`~AttentionSegLib.io.atomic.atomic_path`); the
    temporary file ends in ``suffix``, which picks the format."""
    try:
        with atomic_path(path, suffix=suffix) as temporary:
            sitk.WriteImage(image, str(temporary), useCompression=compress)
    except RuntimeError as error:
        raise ImageWriteError(f"{path}: cannot write image: {_short_reason(error)}") from None
    return Path(path)


def check_finite(image: Image, what: str) -> None:
    """Refuse an image with NaN or infinite voxels (networks and resampling would spread them).

    Raises:
        ImageReadError: naming ``what`` and how many voxels are not finite.
    """
    if np.issubdtype(image.array.dtype, np.integer):
        return
    finite = np.isfinite(image.array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ImageReadError(f"{what}: {bad} voxel(s) are NaN or infinite (not finite); fix or mask them first")


def _format_mm(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.5g}" for v in values) + ")"


def grid_differences(a: Image | ImageHeader, b: Image | ImageHeader) -> list[str]:
    """How the voxel grids of ``a`` and ``b`` differ (empty when they are the same grid)."""
    shape_a = a.spatial_shape if isinstance(a, Image) else tuple(reversed(a.size))
    shape_b = b.spatial_shape if isinstance(b, Image) else tuple(reversed(b.size))
    if len(shape_a) != len(shape_b):
        return [f"{len(shape_a)}D vs {len(shape_b)}D"]
    problems = []
    if shape_a != shape_b:
        problems.append(f"size {shape_a[::-1]} vs {shape_b[::-1]} voxels")
    spacing_a, spacing_b = np.asarray(a.spacing), np.asarray(b.spacing)
    if np.any(np.abs(spacing_a - spacing_b) > SPACING_RELATIVE_TOLERANCE * np.maximum(spacing_a, spacing_b)):
        problems.append(f"spacing {_format_mm(spacing_a)} vs {_format_mm(spacing_b)} mm")
    origin_shift = float(np.max(np.abs(np.asarray(a.origin) - np.asarray(b.origin))))
    if origin_shift > ORIGIN_TOLERANCE_VOXELS * float(min(spacing_a.min(), spacing_b.min())):
        problems.append(f"origin differs by {origin_shift:.4g} mm")
    if np.max(np.abs(np.asarray(a.direction) - np.asarray(b.direction))) > DIRECTION_TOLERANCE:
        problems.append("direction differs")
    return problems


def check_same_grid(a: Image, b: Image, what_a: str, what_b: str) -> None:
    """Raise :class:`GeometryMismatchError` naming both sides when the grids differ."""
    problems = grid_differences(a, b)
    if problems:
        raise GeometryMismatchError(f"{what_a} and {what_b} are on different voxel grids: {'; '.join(problems)}")
