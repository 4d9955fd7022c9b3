#!/usr/bin/env python3
"""A small liver dataset for the DICOM end-to-end run (bench/dicom_end_to_end.sh), made from the
TotalSegmentator example CT in ../shared/data: its 30 slices cut into slabs of 6 (one case each),
liver (TotalSegmentator id 5) as label 1, coded with the SNOMED CT terminology of dcmqi's
seg-example.json (dcmqi's own key names, as dataset.json accepts them).

    python bench/make_liver_dataset.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from AttentionSegLib.io.image import Image, read_image, write_image

LIVER_ID = 5
SLAB = 6


def main(data: Path, out: Path) -> None:
    ct = read_image(data / "totalseg-example" / "example_ct_sm.nii.gz")
    labels = read_image(data / "totalseg-example" / "example_seg.nii.gz")
    example = json.loads((data / "dicom-dcmqi" / "seg-example.json").read_text())["segmentAttributes"][0][0]
    terminology = {
        key: example[key] for key in ("SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence")
    }
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    matrix = ct.index_to_physical()
    for index, start in enumerate(range(0, ct.spatial_shape[0] - SLAB + 1, SLAB)):
        origin = tuple((matrix @ [0, 0, start, 1])[:3])  # the slab's first slice, same grid otherwise
        case = f"liver_{index:03d}"
        slab = slice(start, start + SLAB)
        write_image(Image(ct.array[slab], ct.spacing, origin, ct.direction), out / "imagesTr" / f"{case}_0000.nii.gz")
        liver = (labels.array[slab] == LIVER_ID).astype(np.uint8)
        write_image(Image(liver, ct.spacing, origin, ct.direction), out / "labelsTr" / f"{case}.nii.gz")
    definition = {
        "name": "LiverSlabs",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "Liver": 1},
        "file_ending": ".nii.gz",
        "numTraining": index + 1,
        "terminology": {"1": terminology},
    }
    (out / "dataset.json").write_text(json.dumps(definition, indent=1))
    print(f"wrote {out / 'dataset.json'}: {index + 1} cases of {SLAB} slices")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
