"""Experiment planning: the rules on synthetic fingerprints, the plan's round trip and budget, and
``train`` / ``plan`` using it."""

import json

import numpy as np
import pytest

from AttentionSegLib.data.fingerprint import CaseFingerprint, ChannelIntensity, DatasetFingerprint
from AttentionSegLib.models.memory import estimate_step
from AttentionSegLib.training.config import TrainingConfig
from AttentionSegLib.training.device_budget import DeviceBudget
from AttentionSegLib.training.experiment_planner import (
    ExperimentPlan,
    apply_plan,
    lateralised_axes,
    plan_experiment,
    target_spacing,
)
from AttentionSegLib.training.patch_fitting import (
    CPU_STEP_MACS_PER_THREAD_S,
    CPU_STEP_TARGET_S,
    cpu_step_target_s,
    narrowed_widths,
    pooling_levels,
)
from conftest import attentionseg

CPU = DeviceBudget("cpu", 8 * 2**30, 2, "CPU, 2 threads")


def fingerprint(shapes, spacings, centroids=None, kind="mri", labels=None, channels=("MRI",), voxels=1000, dims=3):
    """A fingerprint of cases with the given shapes and spacings; ``centroids``: per case, label ->
    centroid (mm), each label a box 10 mm wide around it."""
    labels = labels or {0: "background", 1: "left", 2: "right"}
    cases = []
    for index, (shape, spacing) in enumerate(zip(shapes, spacings)):
        per_label = centroids[index] if centroids else {1: (10.0,) * dims, 2: (20.0,) * dims}
        boxes = {
            value: tuple((int((c - 5) / s), int((c + 5) / s)) for c, s in zip(centre, spacing))
            for value, centre in per_label.items()
        }
        cases.append(
            CaseFingerprint(
                case_id=f"case{index}",
                shape=tuple(shape),
                spacing=tuple(spacing),
                label_voxels={value: voxels for value in per_label},
                label_bbox=boxes,
                label_centroid_mm=dict(per_label),
            )
        )
    intensity = [ChannelIntensity(name, 0.0, 1.0, -1.0, 1.0, -1.0, 0.0, 1.0) for name in channels]
    return DatasetFingerprint(
        "synthetic", "/x/dataset.json", "key", dims, kind, tuple(channels), labels, tuple(cases), tuple(intensity)
    )


def test_target_spacing_is_the_median_unless_thick_slices_are_few():
    spacings = np.array([[1.0, 0.8, 0.8], [1.2, 0.7, 0.7], [1.1, 0.9, 0.9]])
    shapes = np.array([[100, 200, 200]] * 3)
    spacing, reason = target_spacing(spacings, shapes)
    assert spacing == pytest.approx((1.1, 0.8, 0.8)) and "median" in reason
    # 5 mm slices (> 3x the in-plane 0.8 mm), 30 of them against 400 in-plane voxels: the 10th
    # percentile of the slice spacings is taken, as nnU-Net does.
    spacings = np.array([[s, 0.8, 0.8] for s in (3.0, 5.0, 5.0, 5.0, 6.0, 4.0, 5.0, 5.0, 5.0, 5.0)])
    shapes = np.array([[30, 400, 400]] * 10)
    spacing, reason = target_spacing(spacings, shapes)
    assert spacing[0] == pytest.approx(np.percentile(spacings[:, 0], 10)) and spacing[1:] == pytest.approx((0.8, 0.8))
    assert "10th percentile" in reason
    # Thick slices but many of them (not few slices): the median stays.
    assert target_spacing(spacings, np.array([[400, 400, 400]] * 10))[0][0] == pytest.approx(5.0)


def test_pooling_keeps_the_bottleneck_at_least_four_voxels():
    assert pooling_levels((40, 56, 40)) == 3  # 40 / 8 = 5 >= 4, 40 / 16 < 4
    assert pooling_levels((8, 8, 8)) == 1
    assert pooling_levels((512, 512, 512)) == 5  # at most 5


def test_a_lateralised_label_pair_keeps_its_axis_out_of_the_mirror_axes():
    rng = np.random.default_rng(0)
    # "left" always 20 mm lower along axis 2 than "right", random along the other axes.
    centroids = []
    for _ in range(12):
        base = rng.uniform(20, 40, 3)
        centroids.append({1: tuple(base), 2: (base[0] + rng.normal(0, 8), base[1] + rng.normal(0, 8), base[2] + 20)})
    lateral = fingerprint([(64, 64, 64)] * 12, [(1.0, 1.0, 1.0)] * 12, centroids)
    axes, reason = lateralised_axes(lateral)
    assert set(axes) == {2} and "left and right keep their order along axis 2" in reason
    plan = plan_experiment(lateral, "unet", CPU)
    assert plan.value("mirror_axes") == [0, 1]
    # Random relative positions: every axis is mirrored.
    shuffled = [{1: c[1], 2: c[2]} if i % 2 else {1: c[2], 2: c[1]} for i, c in enumerate(centroids)]
    plan = plan_experiment(fingerprint([(64, 64, 64)] * 12, [(1.0,) * 3] * 12, shuffled), "unet", CPU)
    assert plan.value("mirror_axes") == [0, 1, 2]


def test_tiny_images_get_a_small_patch_and_large_ones_a_patch_that_fits_the_cpu_budget():
    tiny = plan_experiment(fingerprint([(20, 24, 18)] * 4, [(1.0,) * 3] * 4), "unet", CPU)
    patch = tiny.value("patch_size")
    levels = len(tiny.value("options")["strides"])
    assert all(p % 2**levels == 0 for p in patch) and all(p >= s for p, s in zip(patch, (20, 24, 18)))
    assert max(patch) <= 32
    large = plan_experiment(fingerprint([(300, 512, 512)] * 4, [(1.0,) * 3] * 4, kind="ct"), "unet", CPU)
    spec = _spec(large, "unet")
    seconds = estimate_step(spec, 2).step_macs / (CPU_STEP_MACS_PER_THREAD_S * CPU.threads)
    assert seconds <= CPU_STEP_TARGET_S and "shrunk" in large.values["patch_size"].reason
    assert np.prod(large.value("patch_size")) < 300 * 512 * 512 / 50


def test_a_time_limit_shortens_the_cpu_step_so_that_a_run_takes_about_a_thousand_steps():
    assert cpu_step_target_s(None) == CPU_STEP_TARGET_S and cpu_step_target_s(10) == pytest.approx(0.6)
    assert cpu_step_target_s(600) == CPU_STEP_TARGET_S  # long runs keep the 1 s step
    large = fingerprint([(300, 512, 512)] * 4, [(1.0,) * 3] * 4, kind="ct")
    unlimited = plan_experiment(large, "unet", CPU)
    limited = plan_experiment(large, "unet", CPU, time_limit_min=10)
    seconds = estimate_step(_spec(limited, "unet"), 2).step_macs / (CPU_STEP_MACS_PER_THREAD_S * CPU.threads)
    assert seconds <= 0.6
    assert np.prod(limited.value("patch_size")) < np.prod(unlimited.value("patch_size"))


def test_a_network_over_the_budget_at_its_smallest_patch_is_narrowed_and_keeps_its_widths_on_a_gpu():
    small = fingerprint([(36, 50, 35)] * 6, [(1.0,) * 3] * 6)
    # IACNN's published widths (64-1024) cost seconds a step even at its smallest 3D patch.
    cpu = plan_experiment(small, "iacnn", CPU, time_limit_min=10)
    features = cpu.value("options")["features"]
    assert features[0] < 64 and [f // features[0] for f in features] == [1, 2, 4, 8, 16]
    seconds = estimate_step(_spec(cpu, "iacnn"), 2).step_macs / (CPU_STEP_MACS_PER_THREAD_S * CPU.threads)
    assert seconds <= 0.6 and "widths /" in cpu.values["options"].reason
    assert cpu.value("learning_rate") == 2e-3  # Adam under a short budget, not the paper's 1e-4
    assert cpu.value("loss") == "dice_ce"  # two labels: softmax, not one sigmoid per class
    gpu = plan_experiment(small, "iacnn", DeviceBudget("cuda", 40 * 2**30, 8, "GPU 40 GiB"))
    assert "options" not in gpu.values  # published widths


def test_narrowed_widths_only_for_networks_that_take_them():
    assert narrowed_widths("unet", 3, 2) is None  # its topology is planned by rule 3 instead
    assert narrowed_widths("swinnext", 3, 1) == {}
    assert narrowed_widths("swinnext", 3, 2) == {"feature_size": 24}
    assert narrowed_widths("danie", 3, 2) == {"feature_sizes": [24, 48, 96, 192]}
    assert narrowed_widths("unetrpp", 3, 64) is None  # 32 channels / 64 is not a width


def test_the_plan_fits_a_gpu_memory_budget_and_a_smaller_budget_shrinks_the_patch():
    large = fingerprint([(200, 400, 400)] * 8, [(1.0,) * 3] * 8, kind="ct")
    roomy = plan_experiment(large, "unet", DeviceBudget("cuda", 40 * 2**30, 8, "GPU 40 GiB"))
    tight = plan_experiment(large, "unet", DeviceBudget("cuda", 3 * 2**30, 8, "GPU 3 GiB"))
    for plan, budget in ((roomy, 40 * 2**30), (tight, 3 * 2**30)):
        estimate = estimate_step(_spec(plan, "unet"), plan.value("batch_size"))
        assert estimate.training_bytes() <= budget
        assert plan.value("batch_size") >= 2
    assert np.prod(tight.value("patch_size")) < np.prod(roomy.value("patch_size"))
    assert roomy.value("options")["channels"][0] == 32  # GPU topology starts at 32 channels


def test_2d_rgb_photographs_plan_a_2d_network_mirrored_on_both_axes():
    photos = fingerprint(
        [(256, 320)] * 10,
        [(1.0, 1.0)] * 10,
        [{1: (128.0, 160.0)}] * 10,
        kind="rgb",
        labels={0: "background", 1: "lesion"},
        channels=("R", "G", "B"),
        dims=2,
    )
    plan = plan_experiment(photos, "axunet", CPU)
    assert plan.network_dims == 2 and len(plan.value("patch_size")) == 2
    assert "loss" not in plan_experiment(photos, "iacnn", CPU).values  # one label: the recipe's bce_dice
    assert plan.value("mirror_axes") == [0, 1] and plan.value("normalization") == "rgb"


def test_the_plan_round_trips_through_json():
    plan = plan_experiment(fingerprint([(40, 50, 36)] * 6, [(1.0, 1.0, 1.0)] * 6), "unet", CPU, time_limit_min=10)
    again = ExperimentPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert again.value("learning_rate") == 2e-3 and again.value("schedule") == "poly"  # short budget, AdamW
    table = plan.format()
    assert all(name in table and planned.reason in table for name, planned in plan.values.items())


def test_settings_the_user_gave_win_over_the_plan():
    plan = plan_experiment(fingerprint([(40, 50, 36)] * 6, [(1.0, 1.0, 1.0)] * 6), "unet", CPU, time_limit_min=10)
    config = TrainingConfig("d.json", "unet", "run", patch_size=[16, 16, 16], learning_rate=1e-4, compact=True)
    planned, applied = apply_plan(config, plan)
    assert planned.patch_size == [16, 16, 16] and planned.learning_rate == 1e-4
    assert "options" not in applied and planned.options == {}  # compact keeps its own topology
    assert planned.mirror_axes == plan.value("mirror_axes") and planned.target_spacing == plan.value("target_spacing")
    assert set(applied) >= {"mirror_axes", "target_spacing", "batch_size", "val_every", "schedule"}


def _spec(plan, model):
    return {
        "name": model,
        "spatial_dims": plan.network_dims,
        "in_channels": 1,
        "out_channels": 3,
        "patch_size": plan.value("patch_size"),
        "clinical_features": 0,
        "options": plan.value("options", {}),
    }


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    from AttentionSegLib.data.phantoms import write_phantom_dataset

    folder = tmp_path_factory.mktemp("planning")
    return write_phantom_dataset(folder / "data", n_cases=6, shape=(16, 24, 24), spacing_mm=(2.0, 1.0, 1.0))


def test_plan_command_prints_the_plan_and_a_gpu_plan_without_a_gpu(phantom_dataset):
    result = attentionseg("plan", phantom_dataset, "--model", "unet", "--time-limit", "5")
    assert result.returncode == 0, result.stderr
    assert "patch_size" in result.stdout and "mirror_axes" in result.stdout and "5 min" in result.stdout
    result = attentionseg("plan", phantom_dataset, "--model", "unet", "--gpu-memory", "80", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["device"]["kind"] == "cuda" and plan["values"]["batch_size"]["value"] >= 2
    assert plan["values"]["options"]["value"]["channels"][0] == 32
    bad = attentionseg("plan", phantom_dataset, "--model", "unet", "--gpu-memory", "-1")
    assert bad.returncode == 2 and "gpu-memory" in bad.stderr


def test_train_takes_unset_values_from_the_plan_and_keeps_it_in_the_run_and_the_model_file(phantom_dataset, tmp_path):
    from AttentionSegLib.inference.model_file import load_model_file
    from AttentionSegLib.training.trainer import train

    config = TrainingConfig(str(phantom_dataset), "unet", str(tmp_path / "run"), epochs=1, iterations_per_epoch=2)
    summary = train(config)
    run = tmp_path / "run"
    plan = json.loads((run / "plan.json").read_text())
    saved = json.loads((run / "config.json").read_text())
    assert saved["patch_size"] == plan["values"]["patch_size"]["value"]
    assert saved["options"] == plan["values"]["options"]["value"]
    assert saved["iterations_per_epoch"] == 2 and "iterations_per_epoch" not in plan["applied"]  # the user's
    assert (run / "fingerprint.json").is_file()
    model = load_model_file(summary["model_file"])
    assert model.training["experiment_plan"]["values"]["patch_size"] == plan["values"]["patch_size"]
    assert list(model.patch_size) == plan["values"]["patch_size"]["value"]
    # --no-plan: the network's defaults, as before planning existed.
    unplanned = TrainingConfig(
        str(phantom_dataset), "unet", str(tmp_path / "plain"), epochs=1, iterations_per_epoch=2, use_plan=False
    )
    train(unplanned)
    assert not (tmp_path / "plain" / "plan.json").exists()
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["options"] == {}


def test_the_training_form_shows_the_plan_and_what_the_form_sets_itself(phantom_dataset, tmp_path):
    from AttentionSegLib.training.experiment_planner import plan_report

    report = plan_report(TrainingConfig(str(phantom_dataset), "unet", str(tmp_path / "run"), patch_size=[16, 16, 16]))
    assert report.startswith("plan for unet on") and "mirror_axes" in report
    assert report.splitlines()[-1] == "set by you (the plan's value is not used): patch_size"


def test_validation_is_spaced_out_when_it_would_cost_as_much_as_training():
    def plan_for(shape):
        cases = fingerprint(
            [shape] * 20, [(1.0, 1.0)] * 20, [{1: (50.0, 50.0)}] * 20, labels={0: "bg", 1: "lesion"}, dims=2
        )
        return plan_experiment(cases, "unet", CPU, time_limit_min=10)

    small = plan_for((64, 64))  # one window a case
    large = plan_for((1024, 1024))  # the patch fits a fraction of each image: many windows
    assert small.value("val_every") == 1 and "x 1 windows" in small.values["val_every"].reason
    assert large.value("val_every") > 1


def test_a_real_step_slower_than_estimated_makes_the_plan_refit(monkeypatch):
    from AttentionSegLib.models import memory
    from AttentionSegLib.training import patch_fitting as planning

    large = fingerprint([(120, 160, 160)] * 4, [(1.0,) * 3] * 4, kind="ct")
    estimated = plan_experiment(large, "unet", CPU, time_limit_min=10)
    spec = _spec(estimated, "unet")
    seconds = estimate_step(spec, 2).step_macs / (CPU_STEP_MACS_PER_THREAD_S * CPU.threads)

    # The machine is three times slower than the multiply-add estimate says, for every patch.
    def three_times_the_estimate(spec):
        return 3 * estimate_step(spec, 2).step_macs / (CPU_STEP_MACS_PER_THREAD_S * CPU.threads)

    monkeypatch.setattr(memory, "time_cpu_step", three_times_the_estimate)
    refitted = plan_experiment(large, "unet", CPU, time_limit_min=10, measure=True)
    assert np.prod(refitted.value("patch_size")) < np.prod(estimated.value("patch_size"))
    assert "3.0x the multiply-add estimate: refitted" in refitted.values["patch_size"].reason
    # A network whose step time does not follow its multiply-adds: the refitted plan is no faster,
    # so the first one stands.
    monkeypatch.setattr(memory, "time_cpu_step", lambda spec: 3 * seconds)
    unchanged = plan_experiment(large, "unet", CPU, time_limit_min=10, measure=True)
    assert unchanged.value("patch_size") == estimated.value("patch_size")
    assert "no faster, so the first plan stands" in unchanged.values["patch_size"].reason
    # A step within the tolerance keeps the plan; a wildly slow one (a loaded machine) is capped.
    monkeypatch.setattr(memory, "time_cpu_step", lambda spec: 1.1 * seconds)
    kept = plan_experiment(large, "unet", CPU, time_limit_min=10, measure=True)
    assert kept.value("patch_size") == estimated.value("patch_size") and "measured" in kept.values["patch_size"].reason
    monkeypatch.setattr(memory, "time_cpu_step", lambda spec: 100 * seconds)
    capped = plan_experiment(large, "unet", CPU, time_limit_min=10, measure=True)
    assert f"{planning.MAX_MEASURED_SLOWDOWN:.1f}x" in capped.values["patch_size"].reason


def test_timing_a_real_cpu_step():
    from AttentionSegLib.models.memory import time_cpu_step

    spec = {
        "name": "unet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 2,
        "patch_size": [32, 32],
        "options": {"channels": [4, 8], "strides": [2]},
    }
    seconds = time_cpu_step(spec)
    assert 0 < seconds < 5


def test_an_interactive_plan_spaces_validation_for_the_robot_clicks_on_every_label():
    cases = fingerprint([(36, 50, 35)] * 40, [(1.0,) * 3] * 40)
    automatic = plan_experiment(cases, "unet", CPU, time_limit_min=10)
    interactive = plan_experiment(cases, "unet", CPU, time_limit_min=10, interactive=True)
    assert interactive.value("val_every") > automatic.value("val_every")
    assert "x 6 windows" in interactive.values["val_every"].reason  # 2 labels x 3 clicks


def test_an_interactive_plan_budgets_the_simulated_users_forward_passes():
    from AttentionSegLib.training.interactive import InteractiveTrainer

    # 0.75 of the batches get 1-4 correction rounds, each a forward pass (a third of a step).
    assert InteractiveTrainer.simulation.step_cost == pytest.approx(1 + 0.75 * 2.5 / 3)
    cases = fingerprint([(96, 128, 96)] * 20, [(1.0,) * 3] * 20)
    automatic = plan_experiment(cases, "unet", CPU, time_limit_min=10)
    interactive = plan_experiment(cases, "unet", CPU, time_limit_min=10, interactive=True)

    def voxels_a_step(plan):  # what a step's multiply-adds grow with
        return np.prod(plan.value("patch_size")) * plan.value("batch_size")

    assert voxels_a_step(interactive) < voxels_a_step(automatic)


def test_a_dataset_of_fewer_cases_than_folds_gets_one_fold_per_case():
    four = plan_experiment(fingerprint([(40, 50, 36)] * 4, [(1.0,) * 3] * 4), "unet", CPU, time_limit_min=10)
    assert four.value("n_folds") == 4 and "leave one out" in four.values["n_folds"].reason
    assert "n_folds" not in plan_experiment(fingerprint([(40, 50, 36)] * 6, [(1.0,) * 3] * 6), "unet", CPU).values
    config, applied = apply_plan(TrainingConfig("d.json", "unet", "run"), four)
    assert config.n_folds == 4 and "n_folds" in applied
