#!/usr/bin/env python3
"""dcmqi's read-back of our DICOM SEG against our own label map: the same voxels (compared in
physical space, since dcmqi crops each segment to its frames) and the same geometry.

    python bench/check_dcmqi_readback.py DCMQI_OUTPUT_DIR OUR_LABELS(.seg.nrrd)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def main(folder: Path, ours_path: Path) -> int:
    ours = sitk.ReadImage(str(ours_path))
    array = sitk.GetArrayFromImage(ours)
    meta = json.loads((folder / "meta.json").read_text())
    segments = [s for group in meta["segmentAttributes"] for s in group]
    failures = 0
    for segment in segments:
        number = segment["labelID"]
        theirs = sitk.ReadImage(str(folder / f"{number}.nrrd"))
        placed = sitk.GetArrayFromImage(sitk.Resample(theirs, ours, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
        same_voxels = bool(np.array_equal(placed, array == number))
        spacing_ok = np.allclose(theirs.GetSpacing(), ours.GetSpacing(), rtol=1e-5)
        direction_ok = np.allclose(theirs.GetDirection(), ours.GetDirection(), atol=1e-5)
        code = segment["SegmentedPropertyTypeCodeSequence"]
        print(
            f"segment {number} {segment['SegmentLabel']!r} ({code['CodingSchemeDesignator']} {code['CodeValue']} "
            f"{code['CodeMeaning']}): {int((array == number).sum())} voxels ours, {int(placed.sum())} dcmqi; "
            f"same voxels {same_voxels}, spacing {spacing_ok}, direction {direction_ok}"
        )
        failures += not (same_voxels and spacing_ok and direction_ok)
    print("dcmqi read-back:", "OK" if failures == 0 else f"{failures} segment(s) differ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
