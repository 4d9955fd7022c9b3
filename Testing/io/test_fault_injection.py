"""Faults injected into every writer: a failure (ENOSPC, as a full disk gives) at each step of each
write leaves either the old state or the new one, never a mix, no stray temporary file, and one
line of error; a SIGKILLed writer leaves the old file and its temporary is cleaned by the next
write; two writers racing on one file never tear it; a second training into a busy run folder is
refused, and a killed training does not leave its lock behind.

The injector counts calls to the steps writes are made of (``mkstemp``, the format's own writer,
``fsync``, ``chmod``, ``replace``/``link``) and fails the N-th; the walk goes N = 1, 2, ... until a
write completes, so every step of every writer is a failure point once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from AttentionSegLib.data.phantoms import write_dicom_series, write_phantom_dataset
from AttentionSegLib.errors import AttentionSegError
from AttentionSegLib.io.atomic import atomic_torch_save, write_json_atomic
from AttentionSegLib.io.image import Image, read_image, write_image
from AttentionSegLib.io.segmentation_file import write_label_image

ROOT = Path(__file__).resolve().parents[2]


class Injector:
    """Wraps the steps of a write; the ``fail_at``-th call of any of them raises OSError(ENOSPC)."""

    def __init__(self, monkeypatch, steps: list[tuple[object, str]]) -> None:
        self.calls = 0
        self.fail_at = 0
        self.names: list[str] = []
        for owner, attribute in steps:
            original = getattr(owner, attribute)
            monkeypatch.setattr(owner, attribute, self._wrap(original, attribute))

    def _wrap(self, original, name):
        def wrapper(*args, **kwargs):
            self.calls += 1
            self.names.append(name)
            if self.calls == self.fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(*args, **kwargs)

        return wrapper

    def arm(self, fail_at: int) -> None:
        self.calls, self.fail_at, self.names = 0, fail_at, []


COMMON_STEPS = [(tempfile, "mkstemp"), (os, "fsync"), (os, "chmod"), (os, "replace")]


def _state(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def walk(injector: Injector, write, folder: Path, minimum_steps: int) -> tuple[int, dict, dict]:
    """Fail each step in turn; returns (steps walked, state before, state after success)."""
    before = _state(folder)
    n = 0
    while True:
        n += 1
        injector.arm(n)
        try:
            write()
        except AttentionSegError as error:
            assert "\n" not in str(error) and ("No space left" in str(error) or "cannot" in str(error)), str(error)
            assert _state(folder) == before, f"failure at step {n} ({injector.names[-1]}) left a mix"
            continue
        break
    steps_of_the_write = list(injector.names)
    injector.arm(0)
    print(f"fault points walked: {n - 1} ({', '.join(steps_of_the_write)})")  # shown with pytest -s
    assert n - 1 >= minimum_steps, f"only {n - 1} failure points: {injector.names}"
    return n - 1, before, _state(folder)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image(rng.normal(size=(6, 10, 12)).astype(np.float32), (0.8, 0.9, 2.5), (1.0, 2.0, 3.0))


def test_image_and_segmentation_files(monkeypatch, tmp_path, image):
    injector = Injector(monkeypatch, [*COMMON_STEPS, (sitk, "WriteImage")])
    target = tmp_path / "image.nii.gz"
    write_image(image, target)
    newer = image.with_array(image.array + 1)
    steps, before, after = walk(injector, lambda: write_image(newer, target), tmp_path, 4)
    assert before != after and sorted(after) == ["image.nii.gz"]
    np.testing.assert_allclose(read_image(target).array, newer.array)

    labels = image.with_array((image.array > 0).astype(np.uint8))
    seg = tmp_path / "labels.seg.nrrd"
    write_label_image(labels, seg, [{"value": 1, "name": "x"}])
    flipped = labels.with_array(1 - labels.array)
    walk(injector, lambda: write_label_image(flipped, seg, [{"value": 1, "name": "x"}], overwrite=True), tmp_path, 4)
    np.testing.assert_array_equal(read_image(seg).array, flipped.array)


def test_reports_dataset_definitions_model_files_and_checkpoints(monkeypatch, tmp_path):
    injector = Injector(monkeypatch, [*COMMON_STEPS, (json, "dump"), (torch, "save")])
    report = tmp_path / "report.json"
    write_json_atomic(report, {"version": 1})
    walk(injector, lambda: write_json_atomic(report, {"version": 2}), tmp_path, 4)
    assert json.loads(report.read_text()) == {"version": 2}
    checkpoint = tmp_path / "last.pt"
    atomic_torch_save({"epoch": 1}, checkpoint)
    walk(injector, lambda: atomic_torch_save({"epoch": 2}, checkpoint), tmp_path, 4)
    assert torch.load(checkpoint, weights_only=True) == {"epoch": 2}


def test_dicom_seg(monkeypatch, tmp_path, image):
    import highdicom as hd

    from AttentionSegLib.io.dicom_seg import write_dicom_seg
    from AttentionSegLib.io.dicom_series import read_dicom_series

    write_dicom_series(image.with_array(np.round(image.array * 100)), tmp_path / "series")
    series_image, series = read_dicom_series(tmp_path / "series")
    labels = series_image.with_array((series_image.array > 0).astype(np.uint8))
    target = tmp_path / "out" / "seg.dcm"
    target.parent.mkdir()
    names = [{"value": 1, "name": "x"}]
    write_dicom_seg(labels, series, target, names, algorithm_name="a", algorithm_version="1")
    injector = Injector(monkeypatch, [*COMMON_STEPS, (hd.seg.Segmentation, "save_as")])
    flipped = labels.with_array(1 - labels.array)

    def write():
        write_dicom_seg(flipped, series, target, names, algorithm_name="a", algorithm_version="2", overwrite=True)

    walk(injector, write, target.parent, 4)
    assert (
        hd.seg.segread(target).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "2"
    )


def test_models_folder(monkeypatch, tmp_path, trained_models):
    import shutil as shutil_module

    from AttentionSegLib.inference.model_store import register_model

    _, (model, _) = trained_models
    folder = tmp_path / "models"
    register_model(model, folder, name="liver")
    injector = Injector(monkeypatch, [(tempfile, "mkstemp"), (shutil_module, "copyfile"), (os, "link")])
    # a failed hard link falls back to a rename (file systems without links): not a failure point
    steps, before, after = walk(injector, lambda: register_model(model, folder, name="liver"), folder, 2)
    assert sorted(after) == ["liver-2.pt", "liver.pt"] and after["liver.pt"] == before["liver.pt"]


def test_corrections_add_a_whole_case_or_nothing(monkeypatch, tmp_path):
    from AttentionSegLib.data.corrections import add_training_case
    from AttentionSegLib.data.dataset import load_dataset

    dataset = write_phantom_dataset(tmp_path / "data", n_cases=2, shape=(8, 10, 12))
    definition = load_dataset(dataset)
    case = definition.cases[0]
    image, label = read_image(case.images[0]), read_image(case.label)
    injector = Injector(monkeypatch, [*COMMON_STEPS, (sitk, "WriteImage"), (json, "dump")])
    before = _state(dataset.parent)
    steps, _, after = walk(
        injector, lambda: add_training_case(dataset, image, label, original=label), dataset.parent, 10
    )
    added = sorted(set(after) - set(before))
    assert len(added) == 3 and any(name.startswith("labelsTr") for name in added)  # image, label, original
    assert after["dataset.json"] != before["dataset.json"] and len(load_dataset(dataset).cases) == 3


def test_a_killed_writer_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path, image):
    target = tmp_path / "image.nrrd"
    write_image(image, target)
    old = target.read_bytes()
    child = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / "AttentionSeg")!r})
        import numpy as np
        from AttentionSegLib.io.atomic import atomic_path
        with atomic_path({str(target)!r}, suffix=".nrrd") as temporary:
            temporary.write_bytes(b"half a file")
            print("written", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "written"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    strays = [p for p in tmp_path.iterdir() if p.name.startswith(".image.nrrd.")]
    assert target.read_bytes() == old and len(strays) == 1  # the old file, and the killed one's temporary
    write_image(image.with_array(image.array * 2), target)
    assert [p.name for p in tmp_path.iterdir()] == ["image.nrrd"]  # the next write removed the stale temporary


def test_two_writers_racing_on_one_file_never_tear_it(tmp_path, image):
    target = tmp_path / "race.nii.gz"
    versions = [image.with_array(image.array + k) for k in range(2)]
    errors = []

    def writer(version):
        try:
            for _ in range(15):
                write_image(version, target)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    readings = []
    while any(thread.is_alive() for thread in threads):
        if target.exists():
            readings.append(read_image(target).array)  # never a partial file
    for thread in threads:
        thread.join()
    assert not errors
    final = read_image(target).array
    assert any(np.allclose(final, v.array) for v in versions)
    assert all(any(np.allclose(r, v.array) for v in versions) for r in readings)
    assert [p.name for p in tmp_path.iterdir()] == ["race.nii.gz"]


def test_a_second_training_into_a_busy_run_folder_is_refused_and_a_killed_one_frees_it(tmp_path):
    from AttentionSegLib.training.run_folder import RunFolder, RunLock

    folder = RunFolder(tmp_path / "run")
    child = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / "AttentionSeg")!r})
        from AttentionSegLib.training.run_folder import RunFolder, RunLock
        lock = RunLock(RunFolder({str(folder.path)!r})).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(
            AttentionSegError, match=rf"another training is running in this folder \(pid {process.pid}\)"
        ):
            RunLock(folder).acquire()
        # the trainer refuses before touching anything
        from AttentionSegLib.training.config import TrainingConfig
        from AttentionSegLib.training.trainer import train

        dataset = write_phantom_dataset(tmp_path / "data", n_cases=4, shape=(8, 8, 8))
        config = TrainingConfig(dataset=str(dataset), model="unet", run_dir=str(folder.path), epochs=1, compact=True)
        with pytest.raises(AttentionSegError, match="another training is running"):
            train(config)
        assert not folder.path.exists()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    lock = RunLock(folder).acquire()  # the kernel released the killed process's lock
    lock.release()
    assert not folder.lock_file.exists()


def test_no_space_and_read_only_outputs_are_one_line_through_the_command(monkeypatch, tmp_path, capsys, image):
    from AttentionSegLib.cli import main

    label = tmp_path / "label.nii.gz"
    write_image(image.with_array((image.array > 0).astype(np.uint8)), label)
    report = tmp_path / "report.json"
    report.write_text("previous")
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):
        original = os.replace

        def failing_replace(*args, _code=code, _text=text, **kwargs):
            raise OSError(_code, _text)

        monkeypatch.setattr(os, "replace", failing_replace)
        capsys.readouterr()
        assert main(["evaluate", str(label), str(label), "--json", str(report), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0] and "report.json" in err[0]
        monkeypatch.setattr(os, "replace", original)
        assert report.read_text() == "previous"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["label.nii.gz", "report.json"]
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
