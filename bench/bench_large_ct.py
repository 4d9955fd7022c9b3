#!/usr/bin/env python3
"""Segment a 512 x 512 x 1000 CT on this machine and measure peak memory and time, beside the
memory the engine estimates before it starts (AttentionSegLib.inference.memory_check).

    python bench/bench_large_ct.py MODEL_FILE DATA_DIR OUT_DIR [segment options, e.g. --overlap 0]

The CT is made from the TotalSegmentator example of DATA_DIR (resampled to 0.8 x 0.8 mm in-plane,
512 x 512, 1 mm slices, repeated along z to 1000 slices; int16 HU) and written to OUT_DIR, never
to the repository. ``attentionseg segment`` runs in a child process under /usr/bin/time, whose
maximum resident set size is the peak.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def make_ct(data: Path, path: Path) -> None:
    source = sitk.ReadImage(str(data / "totalseg-example" / "example_ct_sm.nii.gz"))
    reference = sitk.Image([512, 512, 90], sitk.sitkInt16)
    reference.SetSpacing((0.8, 0.8, 1.0))
    reference.SetDirection(source.GetDirection())
    centre = source.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in source.GetSize()])
    extent = np.array([511 * 0.8, 511 * 0.8, 89 * 1.0]) / 2
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    reference.SetOrigin(tuple(np.asarray(centre) - direction @ extent))
    slab = sitk.GetArrayFromImage(sitk.Resample(source, reference, sitk.Transform(), sitk.sitkLinear, -1024))
    volume = np.concatenate([slab] * 12, axis=0)[:1000]  # 1000 slices of 1 mm
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing((0.8, 0.8, 1.0))
    image.SetDirection(reference.GetDirection())
    image.SetOrigin(reference.GetOrigin())
    sitk.WriteImage(image, str(path), useCompression=True)


def main(model: Path, data: Path, out: Path, options: list[str]) -> None:
    from AttentionSegLib.inference.memory_check import estimate_segmentation_memory
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.image import read_image
    from AttentionSegLib.resources import format_bytes

    out.mkdir(parents=True, exist_ok=True)
    ct = out / "large_ct.nii.gz"
    if not ct.exists():
        started = time.perf_counter()
        make_ct(data, ct)
        print(f"made {ct} in {time.perf_counter() - started:.1f} s ({ct.stat().st_size / 1e6:.0f} MB)")
    image = read_image(ct)
    overlap = float(options[options.index("--overlap") + 1]) if "--overlap" in options else 0.5
    estimate = estimate_segmentation_memory(Predictor(model, device="cpu", overlap=overlap), image)
    peak = format_bytes(estimate.host_bytes)
    print(f"input {image.spatial_shape[::-1]} voxels, {image.array.dtype}; estimated peak {peak}")
    print(f"  {estimate.describe()}")
    del image
    command = [
        "/usr/bin/time", "-v", str(ROOT / ".venv" / "bin" / "attentionseg"), "segment", str(ct),
        "--model", str(model), "--out", str(out / "large_ct_labels.nii.gz"), "--overwrite", *options,
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stderr[-3000:])
        sys.exit(1)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    timing = re.search(r"\((cpu|cuda)[^)]*\)", result.stderr)
    print(f"segment: {wall:.1f} s wall, peak RSS {format_bytes(peak_kb * 1024)}; {timing.group(0) if timing else ''}")
    print(f"measured / estimated peak: {peak_kb * 1024 / estimate.host_bytes:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
