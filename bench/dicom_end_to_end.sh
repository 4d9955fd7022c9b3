#!/usr/bin/env bash
# DICOM in, DICOM SEG out, on the real CT series of ../shared/data/dicom-dcmqi, checked by dcmqi:
#   bench/dicom_end_to_end.sh OUT_DIR DATA_DIR [MINUTES]
# 1. a liver model: a slice-wise UNet trained MINUTES (default 6) on slabs of the TotalSegmentator CT
#    (bench/make_liver_dataset.py, SNOMED CT codes from dcmqi's seg-example.json);
# 2. attentionseg segment on the DICOM series folder -> DICOM SEG, metrics against dcmqi's liver SEG;
# 3. dcmqi's segimage2itkimage reads our SEG back: same labels and geometry (bench/check_dcmqi_readback.py);
#    dciodvfy validates it; attentionseg evaluate dcmqi's SEG against its NRRD (Dice 1).
set -euo pipefail
out="$1"; data="$2"; minutes="${3:-6}"
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"; as="$root/.venv/bin/attentionseg"; bin="$root/.venv/bin"
series="$data/dicom-dcmqi/ct-3slice"
mkdir -p "$out"
"$py" "$root/bench/make_liver_dataset.py" "$data" "$out/liver"
[ -f "$out/run/model.pt" ] || "$as" train "$out/liver/dataset.json" --model unet --slice-wise --time-limit "$minutes" --out "$out/run" --quiet
/usr/bin/time -f "segment: %e s wall, %M KB peak" "$as" segment "$series" --model "$out/run/model.pt" \
  --out "$out/liver_pred.dcm" --ref "$data/dicom-dcmqi/liver.dcm" --json "$out/segment.json" --overwrite
"$as" segment "$series" --model "$out/run/model.pt" --out "$out/liver_pred.seg.nrrd" --overwrite
rm -rf "$out/dcmqi" && mkdir -p "$out/dcmqi"
"$bin/segimage2itkimage" --inputDICOM "$out/liver_pred.dcm" --outputDirectory "$out/dcmqi" -t nrrd > "$out/dcmqi.log"
"$py" "$root/bench/check_dcmqi_readback.py" "$out/dcmqi" "$out/liver_pred.seg.nrrd"
if command -v dciodvfy >/dev/null; then
  dciodvfy "$out/liver_pred.dcm" > "$out/dciodvfy.txt" 2>&1 || true
  echo "dciodvfy: $(grep -c '^Error' "$out/dciodvfy.txt" || true) errors, $(grep -c '^Warning' "$out/dciodvfy.txt" || true) warnings"
fi
"$as" evaluate "$data/dicom-dcmqi/liver.dcm" "$data/dicom-dcmqi/liver_seg.nrrd" | head -3
