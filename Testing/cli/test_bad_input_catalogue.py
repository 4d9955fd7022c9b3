"""A catalogue of bad inputs for every command: each gives exit code 2 (``dataset validate``
finding problems: 1), one line on stderr naming the file or flag and the problem, no traceback,
no input changed and no output (or half-written output) left behind.

The commands run in this process (``AttentionSegLib.cli.main``) so that the catalogue stays fast;
an exception other than the handled one fails the test, as a traceback would. The Logic entry
points have their own catalogue in Testing/slicer/test_bad_input_logic.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from AttentionSegLib.cli import main
from AttentionSegLib.io.image import Image, read_image, write_image

MARKER = "attentionseg-pickle-ran"


class _RunsCode:
    """Unpickling this would create a marker file: a model file must never run code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_nrrd(path: Path, header: dict, data: bytes = b"") -> Path:
    lines = ["NRRD0004"] + [f"{key}: {value}" for key, value in header.items()]
    path.write_bytes(("\n".join(lines) + "\n\n").encode() + data)
    return path


@pytest.fixture(scope="module")
def world(trained_models, tmp_path_factory):
    """Good and bad files side by side in one folder (the inputs) and an empty output folder."""
    from AttentionSegLib.inference.model_file import load_model_file

    dataset, (model, _) = trained_models
    root = tmp_path_factory.mktemp("catalogue")
    inputs, outputs = root / "inputs", root / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    case = load_model_file(model).training["val_cases"][0]
    image = read_image(dataset.parent / "imagesTr" / f"{case}_0000.nii.gz")
    label = read_image(dataset.parent / "labelsTr" / f"{case}.nii.gz")
    files = {"dataset": dataset, "model": model, "outputs": outputs, "root": root}

    def put(name, image_or_bytes):
        path = inputs / name
        if isinstance(image_or_bytes, bytes):
            path.write_bytes(image_or_bytes)
        else:
            write_image(image_or_bytes, path)
        files[name] = path
        return path

    put("image.nii.gz", image)
    put("label.nii.gz", label)
    good_bytes = files["image.nii.gz"].read_bytes()
    put("empty.nii.gz", b"")
    put("truncated.nii.gz", good_bytes[: len(good_bytes) // 2])
    put("corrupt.nrrd", bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    put("text.nii.gz", b"this is not an image\n")
    put("text.mha", b"ObjectType = Image\nNDims = 3\nDimSize = 4 4\nElementDataFile = LOCAL\n")
    put("fractional.nii.gz", label.with_array(label.array.astype(np.float32) * 0.5))
    put("negative.nii.gz", label.with_array(label.array.astype(np.int16) - 1))
    put("undeclared.nii.gz", label.with_array(np.where(label.array > 0, 7, 0).astype(np.uint8)))
    nan = image.array.astype(np.float32).copy()
    nan[2, 3, 4] = np.nan
    put("nan.nii.gz", image.with_array(nan))
    inf = image.array.astype(np.float32).copy()
    inf[1, 1, 1] = np.inf
    put("inf.nii.gz", image.with_array(inf))
    put("shifted_label.nii.gz", Image(label.array, label.spacing, tuple(np.add(label.origin, 5.0)), label.direction))
    put("label2d.nii.gz", Image(label.array[0]))
    put("image2d.nii.gz", Image(image.array[0].astype(np.float32)))
    put("rgb.png", Image(np.zeros((3, 16, 16), dtype=np.uint8), has_channels=True))
    put("two_channels.nii.gz", Image(np.stack([image.array, image.array]), image.spacing, image.origin,
                                     image.direction, has_channels=True))  # fmt: skip
    raw = np.zeros((4, 4, 4), dtype=np.uint8).tobytes()
    header = {"type": "uint8", "dimension": 3, "encoding": "raw", "sizes": "4 4 4"}
    files["zero_spacing.nrrd"] = _write_nrrd(inputs / "zero_spacing.nrrd", {**header, "spacings": "0 1 1"}, raw)
    files["huge.nrrd"] = _write_nrrd(inputs / "huge.nrrd", {**header, "sizes": "100000 100000 100000"}, raw)
    # model files: text, truncated, newer, runs code when unpickled
    model_bytes = model.read_bytes()
    put("model_text.pt", b"not a model\n")
    put("model_truncated.pt", model_bytes[: len(model_bytes) // 3])
    import torch

    payload = torch.load(model, map_location="cpu", weights_only=True)
    metadata = json.loads(payload["attentionseg_model"])
    torch.save(
        {**payload, "attentionseg_model": json.dumps({**metadata, "format_version": 99})}, inputs / "model_newer.pt"
    )
    files["model_newer.pt"] = inputs / "model_newer.pt"
    marker = root / MARKER
    torch.save({"attentionseg_model": _RunsCode(str(marker)), "state_dict": {}}, inputs / "model_exec.pt")
    files["model_exec.pt"] = inputs / "model_exec.pt"
    (inputs / "model_pickle.pt").write_bytes(pickle.dumps(_RunsCode(str(marker))))
    files["model_pickle.pt"] = inputs / "model_pickle.pt"
    files["marker"] = marker
    # dataset definitions
    definition = json.loads(dataset.read_text())

    def put_json(name, content):
        path = inputs / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        files[name] = path

    put_json("not_json.json", "{labels: oops")
    put_json("no_labels.json", {k: v for k, v in definition.items() if k != "labels"})
    msd = {
        "name": "bad", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "tensorImageSize": "3D",
    }  # fmt: skip
    image_path, label_path = str(files["image.nii.gz"]), str(files["label.nii.gz"])
    gone = {"image": str(inputs / "gone.nii.gz"), "label": label_path, "case_id": "gone"}
    put_json("missing_files.json", {**msd, "training": [{"image": image_path, "label": label_path}, gone]})
    put_json(
        "duplicate_ids.json", {**msd, "training": [{"image": image_path, "label": label_path, "case_id": "a"}] * 2}
    )
    put_json("mixed_dims.json", {**msd, "training": [
        {"image": image_path, "label": label_path, "case_id": "a"},
        {"image": str(files["image2d.nii.gz"]), "label": str(files["label2d.nii.gz"]), "case_id": "b"}]})  # fmt: skip
    shifted = {"image": image_path, "label": str(files["shifted_label.nii.gz"]), "case_id": "a"}
    put_json("mismatched_label.json", {**msd, "training": [shifted]})
    put_json("two_channel.json", {**msd, "modality": {"0": "T1", "1": "T2"}, "training": [
        {"image": str(files["two_channels.nii.gz"]), "label": label_path, "case_id": "a"}]})  # fmt: skip
    files["folder"] = inputs  # a folder that is not a DICOM series
    return files


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# (id, argv with {placeholders}, fragments of the one line, exit code)
CASES = [
    # evaluate: files
    ("evaluate-missing", "evaluate {inputs}/nope.nii.gz {label.nii.gz}", ["nope.nii.gz", "file not found"], 2),
    ("evaluate-empty", "evaluate {empty.nii.gz} {label.nii.gz}", ["empty.nii.gz"], 2),
    ("evaluate-truncated", "evaluate {truncated.nii.gz} {label.nii.gz}", ["truncated.nii.gz", "truncated"], 2),
    ("evaluate-corrupt", "evaluate {corrupt.nrrd} {label.nii.gz}", ["corrupt.nrrd"], 2),
    ("evaluate-wrong-format", "evaluate {text.nii.gz} {label.nii.gz}", ["text.nii.gz"], 2),
    ("evaluate-bad-header", "evaluate {text.mha} {label.nii.gz}", ["text.mha"], 2),
    ("evaluate-folder", "evaluate {folder} {label.nii.gz}", ["no DICOM image files"], 2),
    ("evaluate-fractional", "evaluate {fractional.nii.gz} {label.nii.gz}", ["fractional.nii.gz", "integer"], 2),
    ("evaluate-negative", "evaluate {negative.nii.gz} {label.nii.gz}", ["negative.nii.gz", "negative"], 2),
    ("evaluate-nan", "evaluate {nan.nii.gz} {label.nii.gz}", ["nan.nii.gz"], 2),
    ("evaluate-undeclared", "evaluate {undeclared.nii.gz} {label.nii.gz} --labels {dataset}", ["not declared"], 2),
    ("evaluate-geometry", "evaluate {shifted_label.nii.gz} {label.nii.gz}", ["different voxel grids", "origin"], 2),
    ("evaluate-2d-for-3d", "evaluate {label2d.nii.gz} {label.nii.gz}", ["2D", "3D"], 2),
    ("evaluate-zero-spacing", "evaluate {zero_spacing.nrrd} {zero_spacing.nrrd}", ["zero_spacing.nrrd", "spacing"], 2),
    (
        "train-spacing-negative",
        "train {dataset} --model unet --out {outputs}/run --target-spacing -1 1 1",
        ["spacing"],
        2,
    ),
    ("train-spacing-zero", "train {dataset} --model unet --out {outputs}/run --target-spacing 0 1 1", ["spacing"], 2),
    ("evaluate-huge-header", "evaluate {huge.nrrd} {label.nii.gz}", ["huge.nrrd", "100000"], 2),
    (
        "evaluate-json-is-input",
        "evaluate {label.nii.gz} {label.nii.gz} --json {label.nii.gz}",
        ["overwrite an input"],
        2,
    ),
    ("evaluate-json-exists", "evaluate {label.nii.gz} {label.nii.gz} --json {image.nii.gz}", ["image.nii.gz"], 2),
    (
        "evaluate-json-no-folder",
        "evaluate {label.nii.gz} {label.nii.gz} --json {outputs}/no/such/r.json",
        ["does not exist"],
        2,
    ),
    (
        "evaluate-json-unwritable",
        "evaluate {label.nii.gz} {label.nii.gz} --json /proc/attentionseg.json",
        ["/proc/attentionseg.json"],
        2,
    ),
    (
        "evaluate-json-folder-is-file",
        "evaluate {label.nii.gz} {label.nii.gz} --json {label.nii.gz}/r.json",
        ["r.json"],
        2,
    ),
    ("evaluate-json-is-folder", "evaluate {label.nii.gz} {label.nii.gz} --json {outputs}", ["is a folder"], 2),
    ("evaluate-nsd-negative", "evaluate {label.nii.gz} {label.nii.gz} --nsd-tolerance -1", ["--nsd-tolerance"], 2),
    # segment: images, models, flags, outputs
    (
        "segment-nan-image",
        "segment {nan.nii.gz} --model {model} --out {outputs}/p.nii.gz",
        ["nan.nii.gz", "not finite"],
        2,
    ),
    (
        "segment-inf-image",
        "segment {inf.nii.gz} --model {model} --out {outputs}/p.nii.gz",
        ["inf.nii.gz", "not finite"],
        2,
    ),
    ("segment-2d-for-3d", "segment {image2d.nii.gz} --model {model} --out {outputs}/p.nii.gz", ["2D"], 2),
    ("segment-photo-for-volume", "segment {rgb.png} --model {model} --out {outputs}/p.nii.gz", ["rgb.png", "2D"], 2),
    (
        "segment-wrong-channels",
        "segment {two_channels.nii.gz} --model {model} --out {outputs}/p.nii.gz",
        ["channel"],
        2,
    ),
    (
        "segment-too-many-images",
        "segment {image.nii.gz} {image.nii.gz} --model {model} --out {outputs}/p.nii.gz",
        ["channel"],
        2,
    ),
    (
        "segment-model-text",
        "segment {image.nii.gz} --model {model_text.pt} --out {outputs}/p.nii.gz",
        ["model_text.pt", "not a readable model file"],
        2,
    ),
    (
        "segment-model-truncated",
        "segment {image.nii.gz} --model {model_truncated.pt} --out {outputs}/p.nii.gz",
        ["model_truncated.pt"],
        2,
    ),
    (
        "segment-model-newer",
        "segment {image.nii.gz} --model {model_newer.pt} --out {outputs}/p.nii.gz",
        ["newer AttentionSeg"],
        2,
    ),
    (
        "segment-model-runs-code",
        "segment {image.nii.gz} --model {model_exec.pt} --out {outputs}/p.nii.gz",
        ["model_exec.pt"],
        2,
    ),
    (
        "segment-model-pickle",
        "segment {image.nii.gz} --model {model_pickle.pt} --out {outputs}/p.nii.gz",
        ["model_pickle.pt"],
        2,
    ),
    (
        "segment-model-is-folder",
        "segment {image.nii.gz} --model {folder} --out {outputs}/p.nii.gz",
        ["model file not found"],
        2,
    ),
    (
        "segment-ref-geometry",
        "segment {image.nii.gz} --model {model} --out {outputs}/p.nii.gz --ref {shifted_label.nii.gz}",
        ["different voxel grids"],
        2,
    ),
    ("segment-out-is-input", "segment {image.nii.gz} --model {model} --out {image.nii.gz}", ["overwrite an input"], 2),
    (
        "segment-out-exists",
        "segment {image.nii.gz} --model {model} --out {label.nii.gz}",
        ["file exists", "--overwrite"],
        2,
    ),
    (
        "segment-out-no-folder",
        "segment {image.nii.gz} --model {model} --out {outputs}/a/b/p.nii.gz",
        ["does not exist"],
        2,
    ),
    (
        "segment-out-unknown-ending",
        "segment {image.nii.gz} --model {model} --out {outputs}/p.xyz",
        ["unknown ending"],
        2,
    ),
    ("segment-out-unwritable", "segment {image.nii.gz} --model {model} --out /proc/p.nii.gz", ["/proc/p.nii.gz"], 2),
    (
        "segment-overlap-range",
        "segment {image.nii.gz} --model {model} --out {outputs}/p.nii.gz --overlap 1.5",
        ["--overlap"],
        2,
    ),
    (
        "segment-overlap-not-number",
        "segment {image.nii.gz} --model {model} --out {outputs}/p.nii.gz --overlap abc",
        ["--overlap"],
        2,
    ),
    # train: dataset definitions and flags
    ("train-not-json", "train {not_json.json} --model unet --out {outputs}/run", ["not_json.json", "JSON"], 2),
    ("train-no-labels", "train {no_labels.json} --model unet --out {outputs}/run", ["no_labels.json", "labels"], 2),
    ("train-missing-files", "train {missing_files.json} --model unet --out {outputs}/run", ["gone.nii.gz"], 2),
    (
        "train-duplicate-ids",
        "train {duplicate_ids.json} --model unet --out {outputs}/run",
        ["duplicate_ids.json", "case id"],
        2,
    ),
    ("train-mixed-dims", "train {mixed_dims.json} --model unet --out {outputs}/run", ["2D"], 2),
    ("train-unknown-network", "train {dataset} --model nosuchnet --out {outputs}/run", ["nosuchnet"], 2),
    ("train-patch-zero", "train {dataset} --model unet --out {outputs}/run --patch 0 16 16", ["patch"], 2),
    ("train-patch-negative", "train {dataset} --model unet --out {outputs}/run --patch -16 16 16", ["patch"], 2),
    ("train-batch-zero", "train {dataset} --model unet --out {outputs}/run --batch 0", ["batch"], 2),
    ("train-time-limit-negative", "train {dataset} --model unet --out {outputs}/run --time-limit -5", ["time"], 2),
    ("train-epochs-zero", "train {dataset} --model unet --out {outputs}/run --epochs 0", ["epochs"], 2),
    ("train-fold-beyond", "train {dataset} --model unet --out {outputs}/run --fold 7 --folds 5", ["fold"], 2),
    ("train-lr-negative", "train {dataset} --model unet --out {outputs}/run --lr -0.1", ["learning rate"], 2),
    ("train-out-is-file", "train {dataset} --model unet --out {label.nii.gz}", ["label.nii.gz"], 2),
    ("train-out-unwritable", "train {dataset} --model unet --out /proc/run --epochs 1", ["/proc/run"], 2),
    # evaluate-dataset, compare, interactive-eval
    ("evaluate-dataset-other-dataset", "evaluate-dataset {model} {two_channel.json} --split all", ["channel"], 2),
    ("evaluate-dataset-unknown-split", "evaluate-dataset {model} {dataset} --split nosuchsplit", ["nosuchsplit"], 2),
    ("evaluate-dataset-not-json", "evaluate-dataset {model} {not_json.json}", ["not_json.json"], 2),
    (
        "evaluate-dataset-geometry",
        "evaluate-dataset {model} {mismatched_label.json} --split all",
        ["shifted_label.nii.gz"],
        2,
    ),
    (
        "compare-model-text",
        "compare --models {model} {model_text.pt} --dataset {dataset} --report {outputs}/rep",
        ["model_text.pt"],
        2,
    ),
    (
        "compare-image-without-ref",
        "compare --models {model} {model} --image {image.nii.gz} --report {outputs}/rep",
        ["--ref"],
        2,
    ),
    (
        "compare-report-is-file",
        "compare --models {model} {model} --dataset {dataset} --report {label.nii.gz}",
        ["not a folder"],
        2,
    ),
    ("interactive-eval-clicks-zero", "interactive-eval {model} {dataset} --clicks 0", ["--clicks"], 2),
    ("interactive-eval-not-json", "interactive-eval {model} {not_json.json}", ["not_json.json"], 2),
    (
        "interactive-eval-scribble-automatic",
        "interactive-eval {model} {dataset} --initial scribble",
        ["initial scribble needs an interactive model"],
        2,
    ),
    # dataset info / split / validate
    ("dataset-info-not-json", "dataset info {not_json.json}", ["not_json.json"], 2),
    ("dataset-info-missing", "dataset info {inputs}/nope.json", ["nope.json"], 2),
    ("dataset-split-folds-one", "dataset split {dataset} --folds 1", ["folds"], 2),
    ("dataset-validate-problems", "dataset validate {missing_files.json}", ["gone.nii.gz", "file not found"], 1),
    ("dataset-validate-duplicates", "dataset validate {duplicate_ids.json}", ["case id appears 2 times"], 1),
    ("dataset-validate-geometry", "dataset validate {mismatched_label.json}", ["not on the grid"], 1),
    ("dataset-validate-mixed", "dataset validate {mixed_dims.json}", ["2D file in a 3D dataset"], 1),
]


@pytest.mark.parametrize("case_id, argv, fragments, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, capsys, case_id, argv, fragments, code):
    mapping = {key: str(value) for key, value in world.items()} | {"inputs": str(world["root"] / "inputs")}
    args = re.sub(r"\{([^}]+)\}", lambda m: mapping[m.group(1)], argv).split()
    before_inputs = _snapshot(world["root"] / "inputs")
    before_outputs = _snapshot(world["outputs"])
    before_dataset = _snapshot(world["dataset"].parent)
    capsys.readouterr()
    try:
        result = main(args)
    except SystemExit as exit_:  # argparse
        result = exit_.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip() and "warning:" not in line]
    assert result == code, (result, captured.err[-2000:])
    if code == 2:
        assert len(lines) == 1, captured.err
        message = lines[0]
    else:  # dataset validate: problems listed on stdout, one per line
        message = captured.out
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in message, message
    assert _snapshot(world["root"] / "inputs") == before_inputs, "an input changed"
    assert _snapshot(world["outputs"]) == before_outputs, "an output was left behind"
    assert _snapshot(world["dataset"].parent) == before_dataset
    assert not world["marker"].exists(), "unpickling ran code"
    assert not Path("/proc/attentionseg.json").exists()


def test_the_catalogue_is_at_least_forty_inputs_over_every_command():
    commands = {
        argv.split()[0] if not argv.startswith("dataset") else " ".join(argv.split()[:2]) for _, argv, _, _ in CASES
    }
    assert len(CASES) >= 40
    assert {"evaluate", "segment", "train", "evaluate-dataset", "compare", "interactive-eval",
            "dataset info", "dataset split", "dataset validate"} <= commands  # fmt: skip
