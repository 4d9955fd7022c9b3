"""The promptable generalist's parts on phantoms: the collection file, the samples (objects, zoom,
contrast), the simulated user's slice prompts, the zooming window, and a tiny run that resumes
exactly and writes a model file a session uses on any grid."""

import json
import shutil

import numpy as np
import pytest
import torch

from AttentionSegLib.data.collection import load_collection
from AttentionSegLib.data.phantoms import write_phantom_dataset
from AttentionSegLib.data.preprocessing import Normalization
from AttentionSegLib.errors import AttentionSegError, DatasetError
from AttentionSegLib.inference.model_file import load_model_file
from AttentionSegLib.inference.predictor import Predictor
from AttentionSegLib.interactive.prompts import ObjectPrompts
from AttentionSegLib.interactive.segmenter import ObjectSegmenter, object_zoom, zoomed_spacing
from AttentionSegLib.interactive.session import InteractiveSession
from AttentionSegLib.io.image import Image, write_image
from AttentionSegLib.training.interactive import UserSimulation, initial_prompts
from AttentionSegLib.training.promptable.samples import draw_sample, load_cases, synthetic_contrast
from AttentionSegLib.training.promptable.trainer import PromptableConfig, train_promptable


@pytest.fixture(scope="module")
def collection_file(tmp_path_factory):
    """A collection of a phantom dataset (dataset.json, 6 cases, 2 held out) and a listed case."""
    root = tmp_path_factory.mktemp("collection-data")
    write_phantom_dataset(root / "phantoms", n_cases=6, shape=(20, 24, 24), n_labels=2, spacing_mm=(2.0, 1.0, 1.0))
    labels = np.zeros((12, 40, 40), np.uint8)
    labels[3:9, 5:30, 8:20] = 1
    labels[4:8, 10:20, 25:35] = 5
    image = (labels * 40.0 + np.random.default_rng(0).normal(0, 5, labels.shape)).astype(np.float32) - 1000
    (root / "ct").mkdir()
    write_image(Image(image, spacing=(0.8, 0.8, 3.0)), root / "ct" / "image.nii.gz")
    write_image(Image(labels, spacing=(0.8, 0.8, 3.0)), root / "ct" / "labels.nii.gz")
    collection = {
        "name": "test",
        "datasets": [
            {"name": "phantoms", "dataset": "phantoms/dataset.json", "licence": "CC0", "held_out": 2},
            {
                "name": "ct",
                "licence": "CC0",
                "labels": {"5": "kidney"},
                "weight": 0.5,
                "cases": [{"id": "ct1", "image": "ct/image.nii.gz", "label": "ct/labels.nii.gz"}],
            },
        ],
    }
    path = root / "collection.json"
    path.write_text(json.dumps(collection))
    return path, root


def test_a_collection_holds_out_the_same_cases_everywhere_and_keeps_only_its_labels(collection_file):
    path, root = collection_file
    collection = load_collection(path, root)
    phantoms, ct = collection.datasets
    assert len(phantoms.cases) == 6 and len(phantoms.held_out) == 2
    assert set(phantoms.held_out) == set(load_collection(path, root).datasets[0].held_out)  # seeded
    assert not {c.case_id for c in phantoms.training_cases} & set(phantoms.held_out)
    assert ct.labels == {5: "kidney"} and ct.weight == 0.5 and phantoms.weight == 1.0
    cases = load_cases(collection)
    assert len(cases) == 5  # 4 phantoms + the CT
    ct_case = next(case for case in cases if case.dataset == "ct")
    assert ct_case.values == (5,) and set(np.unique(ct_case.label)) == {0, 5}  # label 1 is background here
    assert ct_case.spacing == pytest.approx((3.0, 0.8, 0.8))
    # The modality-free normalisation: the image's own 0.5 / 99.5 percentiles become 0 and 1.
    assert ct_case.image.min() == pytest.approx(0.0) and ct_case.image.max() == pytest.approx(1.0)
    assert [d.name for d in collection.without(["ct"]).datasets] == ["phantoms"]
    with pytest.raises(DatasetError, match="no dataset 'brain' to leave out"):
        collection.without(["brain"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d[0].pop("licence"), "needs a 'licence'"),
        (lambda d: d[1].update(labels={"7": "x"}), None),  # a listed case: values are not known beforehand
        (lambda d: d[0].update(labels={"9": "x"}), "label 9 is not in the dataset's labels"),
        (lambda d: d[0].update(held_out=6), "'held_out' must be a whole number below its 6 cases"),
        (lambda d: d[0].update(cases=[]), "either 'dataset'"),
        (lambda d: d[1].update(weight=0), "'weight' must be a positive number"),
        (lambda d: d[1]["cases"][0].update(image="ct/missing.nii.gz"), "missing.nii.gz: not found"),
        (lambda d: d[1].update(name="phantoms"), "dataset names repeat"),
    ],
)
def test_a_bad_collection_is_refused_in_one_line_naming_the_file(collection_file, tmp_path, change, message):
    path, root = collection_file
    content = json.loads(path.read_text())
    change(content["datasets"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    if message is None:
        load_collection(bad, root)
        return
    with pytest.raises(DatasetError, match=message) as refused:
        load_collection(bad, root)
    assert "\n" not in str(refused.value) and ("bad.json" in str(refused.value) or "missing" in message)


def test_the_zoom_rule_and_thin_axes():
    assert object_zoom((10, 20, 30), (64, 64, 64)) == 1
    assert object_zoom((10, 60, 30), (64, 64, 64)) == 2  # 60 > 0.8 x 64
    assert object_zoom((300, 10, 10), (64, 64, 64)) == 8  # the coarsest level when none holds it
    # Three slices of a CT keep their spacing along that axis at every level.
    assert zoomed_spacing((1.0, 0.8, 0.8), (3, 512, 512), 4, (64, 64, 64)) == pytest.approx((1.0, 3.2, 3.2))
    assert zoomed_spacing((7.7, 1.25, 1.25), (37, 256, 256), 4, (64, 64, 64)) == pytest.approx((7.7 * 37 / 16, 5, 5))


def test_samples_hold_their_object_on_the_patch_grid_with_a_known_spacing(collection_file):
    path, root = collection_file
    cases = load_cases(load_collection(path, root))
    rng = np.random.default_rng(0)
    sizes = []
    for index in range(30):
        sample = draw_sample(cases[index % len(cases)], (32, 32, 32), rng)
        assert sample.image.shape == (1, 32, 32, 32) and sample.image.dtype == np.float32
        assert sample.target.shape == (32, 32, 32) and sample.target.any()
        assert np.isfinite(sample.image).all() and all(s > 0 for s in sample.spacing)
        sizes.append(int(sample.target.sum()))
    assert max(sizes) > 4 * min(sizes)  # objects of many sizes (zoom, parts, unions)
    # The contrast changes keep an image finite and near [0, 1].
    labels = np.zeros((16, 16, 16), np.int16)
    labels[4:12, 4:12, 4:12] = 1
    image = synthetic_contrast(labels.astype(np.float32), labels, np.random.default_rng(1))
    assert np.isfinite(image).all() and -0.5 < image.min() and image.max() < 2.0


def test_the_simulated_user_draws_slice_prompts_as_the_session_encodes_them():
    target = np.zeros((20, 30, 30), bool)
    target[5:15, 8:22, 10:20] = True
    spacing = (2.0, 1.0, 1.0)
    for kind in ("slice_box", "lasso", "scribble"):
        simulation = UserSimulation(box_probability=0.0, **{f"{kind}_probability": 1.0})
        for seed in range(5):
            prompts = initial_prompts(target, spacing, np.random.default_rng(seed), simulation)
            if kind == "scribble":
                assert prompts.box is None and prompts.positive and not prompts.negative
                assert all(target[p] for p in prompts.positive)
                assert len({p[a] for p in prompts.positive for a in range(3)}) >= 1
                assert any(len({p[a] for p in prompts.positive}) == 1 for a in range(3))  # on one slice
                continue
            start, stop = prompts.box
            sides = np.subtract(stop, start)
            assert (sides > 0).all()
            # Through the slices: as deep as its larger in-plane side (box_through_slice), within the grid.
            assert all(0 <= a < b <= n for a, b, n in zip(start, stop, target.shape))
            if kind == "lasso":
                assert len(prompts.positive) == 1 and target[prompts.positive[0]]
            else:
                assert not prompts.positive


class _ThresholdWindow:
    """A window that segments "intensity above 0.5" on whatever it is given, recording the zoom."""

    def __init__(self, patch):
        self.patch_size, self.levels = tuple(patch), []

    def extent(self, spacing, working_spacing=None):
        working = working_spacing or spacing
        return tuple(int(p * w / s) for p, w, s in zip(self.patch_size, working, spacing))

    def __call__(self, crop, prompts, spacing, working_spacing=None):
        self.levels.append(round(working_spacing[1] / spacing[1]))
        return crop[0] > 0.5


def test_the_window_zooms_out_until_a_large_object_is_whole():
    image = np.zeros((1, 40, 200, 200), np.float32)
    image[0, 5:35, 20:170, 30:160] = 1.0  # a "liver": much larger than a 32-voxel window
    window = _ThresholdWindow((32, 32, 32))
    segmenter = ObjectSegmenter(window, (1.0, 1.0, 1.0), zoom_levels=(1, 2, 4, 8))
    region, mask = segmenter.predict(image, ObjectPrompts(positive=[(20, 100, 100)]))
    assert window.levels == [1, 2, 4, 8]
    whole = np.zeros(image.shape[1:], bool)
    whole[region] = mask
    assert np.array_equal(whole, image[0] > 0.5)
    # A later click starts at the level that holds the mask so far: one window.
    window.levels.clear()
    segmenter.predict(image, ObjectPrompts(positive=[(20, 100, 100)], previous_mask=whole))
    assert window.levels == [8]
    # A small object: one window at the image's spacing.
    window.levels.clear()
    small = np.zeros_like(image)
    small[0, 15:22, 90:100, 90:100] = 1.0
    segmenter.predict(small, ObjectPrompts(positive=[(18, 95, 95)]))
    assert window.levels == [1]


@pytest.fixture(scope="module")
def tiny_runs(collection_file, tmp_path_factory):
    """The same 4-step run twice: in one go, and stopped after its first step then resumed."""
    path, root = collection_file
    folder = tmp_path_factory.mktemp("promptable-runs")
    torch.set_num_threads(1)

    def config(name, **changes):
        return PromptableConfig(
            str(path), str(root), str(folder / name), steps=4, patch=32, channels=[4, 8, 8, 8, 8], **changes
        )

    whole = train_promptable(config("whole"), log=lambda line: None)
    train_promptable(config("stopped", minutes=0.0), log=lambda line: None)
    # Resumed from a copy of the folder: the copy goes on, the original stays as it was.
    shutil.copytree(folder / "stopped", folder / "resumed")
    original = (folder / "stopped" / "checkpoints" / "last.pt").read_bytes()
    interrupted = json.loads((folder / "resumed" / "config.json").read_text())
    resumed = train_promptable(config("resumed"), resume=True, log=lambda line: None)
    assert (folder / "stopped" / "checkpoints" / "last.pt").read_bytes() == original
    return whole, resumed, interrupted, folder


def test_a_resumed_run_takes_exactly_the_steps_of_an_uninterrupted_one(tiny_runs):
    whole, resumed, interrupted, folder = tiny_runs
    assert interrupted["steps"] == 4
    a, b = load_model_file(whole), load_model_file(resumed)
    assert a.training["steps"] == b.training["steps"] == 4
    for key, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[key]), key
    with pytest.raises(AttentionSegError, match="not empty; use --resume"):
        train_promptable(PromptableConfig("c.json", "r", str(folder / "whole")), log=lambda line: None)


def test_the_generalists_model_file_works_at_any_grid_through_a_session(tiny_runs):
    whole = tiny_runs[0]
    model = load_model_file(whole)
    assert model.is_interactive and model.target_spacing is None and model.zoom_levels == (1, 2, 4, 8)
    assert model.normalization == Normalization("percentile") and model.channel_names == ["image"]
    assert model.training["kind"] == "promptable-generalist"
    assert {d["name"]: d["licence"] for d in model.training["datasets"]} == {"phantoms": "CC0", "ct": "CC0"}
    predictor = Predictor(whole, device="cpu")
    # An anisotropic, oblique CT-like grid the run never saw.
    array = np.zeros((10, 50, 60), np.float32)
    array[3:7, 10:40, 20:50] = 300.0
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image = Image(array, spacing=(0.7, 0.9, 4.0), direction=direction)
    session = InteractiveSession.for_predictor(predictor, [image])
    step = session.add_click((5, 25, 35))
    assert session.mask.shape == array.shape
    assert all(0 <= r.start < r.stop <= n for r, n in zip(step.region, array.shape))
    assert session.undo() is not None and not session.mask.any()


def test_interactive_eval_measures_the_generalist_on_its_held_out_cases_and_every_label(tiny_runs, collection_file):
    from conftest import assert_bad_input, attentionseg

    whole = tiny_runs[0]
    path, root = collection_file
    held_out = load_collection(path, root).datasets[0].held_out
    result = attentionseg("interactive-eval", whole, root / "phantoms" / "dataset.json", "--clicks", "2")
    assert result.returncode == 0, result.stderr
    assert f"on Phantoms, heldout: {len(held_out)} cases" in result.stdout
    assert f"objects {2 * len(held_out)};" in result.stdout  # both labels of both cases: a class-agnostic model
    # A dataset the generalist never saw is measured on all its cases, and said so when asked for held-out ones.
    other = write_phantom_dataset(root / "other", n_cases=2, shape=(20, 24, 24), n_labels=1, seed=3)
    refused = attentionseg("interactive-eval", whole, other, "--clicks", "1")
    assert_bad_input(refused, "holds out no case of", "--split all")
    assert attentionseg("interactive-eval", whole, other, "--clicks", "1", "--split", "all").returncode == 0


def test_sample_workers_change_nothing_but_speed_and_init_starts_from_a_models_weights(tiny_runs, collection_file):
    whole, _, _, folder = tiny_runs
    path, root = collection_file

    def config(name, **changes):
        settings = dict(steps=4, patch=32, channels=[4, 8, 8, 8, 8]) | changes
        return PromptableConfig(str(path), str(root), str(folder / name), **settings)

    pooled = load_model_file(train_promptable(config("pooled", workers=2), log=lambda line: None))
    reference = load_model_file(whole)
    for key, value in reference.state_dict.items():
        assert torch.equal(value, pooled.state_dict[key]), key
    # Started from the whole run's weights, one step at learning rate 0 leaves them as they were.
    started = load_model_file(
        train_promptable(config("init", steps=1, learning_rate=0.0, init=str(whole)), log=lambda line: None)
    )
    assert started.training["initialised_from"] == whole.name
    for key, value in reference.state_dict.items():
        assert torch.equal(value, started.state_dict[key]), key
    with pytest.raises(AttentionSegError, match="is not this run's; --init needs the same network"):
        train_promptable(config("other", channels=[4, 8, 8, 8, 16], init=str(whole)), log=lambda line: None)
    assert not (folder / "other" / "model.pt").exists()
