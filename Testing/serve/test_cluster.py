"""Cohorts over Ray's own two-node test cluster on this machine: ``segment --dataset --cluster`` and
``evaluate-dataset --cluster`` give the local run's files byte for byte, use both nodes, resume
after an interruption without touching finished cases, and refuse a folder of another model; and
``attentionseg serve --cluster`` puts its replicas on both nodes."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

from conftest import assert_bad_input, attentionseg  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    yield nodes.address
    ray.shutdown()
    nodes.shutdown()


def _files(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_cohort_on_two_nodes_equals_the_local_run_and_resumes(cluster, trained_models, tmp_path):
    dataset, (good, short) = trained_models
    local, spread = tmp_path / "local", tmp_path / "spread"
    result = attentionseg("segment", "--dataset", dataset, "--model", good, "--out-dir", local, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    result = attentionseg("segment", "--dataset", dataset, "--model", good, "--out-dir", spread, "--cluster", cluster)
    assert result.returncode == 0, result.stderr
    assert "on 2 node(s) of the cluster" in result.stderr, result.stderr
    expected = _files(local)
    assert len(expected) == 8 + 1  # a label map per case and the folder's manifest
    assert _files(spread) == expected
    # Interrupted: two cases' maps missing. The rerun makes those two and leaves the others' files as they were.
    maps = sorted(spread.glob("*.nii.gz"))
    for path in maps[:2]:
        path.unlink()
    untouched = {path.name: path.stat().st_mtime_ns for path in maps[2:]}
    result = attentionseg("segment", "--dataset", dataset, "--model", good, "--out-dir", spread, "--cluster", cluster)
    assert result.returncode == 0, result.stderr
    assert "6 were done already" in result.stderr
    assert _files(spread) == expected
    assert {path.name: path.stat().st_mtime_ns for path in maps[2:]} == untouched
    # Another model into the same folder: refused, nothing changed.
    refused = attentionseg("segment", "--dataset", dataset, "--model", short, "--out-dir", spread, "--cluster", cluster)
    assert_bad_input(refused, "another model")
    assert _files(spread) == expected


def test_evaluate_dataset_on_the_cluster_reports_the_local_metrics(cluster, trained_models, tmp_path):
    dataset, (good, _) = trained_models
    reports = {}
    for name, extra in (("local", []), ("spread", ["--cluster", cluster, "--predictions", tmp_path / "maps"])):
        result = attentionseg(
            "evaluate-dataset", good, dataset, "--split", "all", "--json", tmp_path / f"{name}.json", *extra
        )
        assert result.returncode == 0, result.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for mine, theirs in zip(reports["spread"]["per_label"], reports["local"]["per_label"]):
        for key in ("dice_mean", "hd95_mm_mean", "n_cases"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-9), key
    assert len(list((tmp_path / "maps").glob("*.json"))) == 8 + 1  # each case's metrics and the manifest


def test_cohort_commands_refuse_bad_input_in_one_line_and_write_nothing(trained_models, tmp_path):
    from serve.server_process import free_port

    dataset, (good, _) = trained_models
    out = tmp_path / "out"
    image = sorted((dataset.parent / "imagesTr").glob("*.nii.gz"))[0]
    for arguments, message in (
        (("--dataset", dataset, "--model", good), "give --out-dir"),
        (("--dataset", dataset, "--model", good, "--out-dir", out, image), "not both"),
        ((image, "--model", good, "--out", tmp_path / "a.nii.gz", "--cluster", "auto"), "goes with --dataset"),
        (("--dataset", dataset, "--model", good, "--out-dir", out, "--cluster", f"127.0.0.1:{free_port()}"),
         "no Ray cluster there"),
    ):  # fmt: skip
        assert_bad_input(attentionseg("segment", *arguments, cwd=dataset.parent), message)
    assert not out.exists()


def test_the_server_on_the_cluster_puts_a_replica_on_each_node(cluster, trained_models, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import numpy as np
    from serve.server_process import ServerProcess

    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image
    from AttentionSegLib.inference.model_source import open_predictor

    dataset, (good, _) = trained_models
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(good, models / "phantom.pt")
    monkeypatch.setenv("ATTENTIONSEG_TOKEN", "cluster-token")
    server = ServerProcess(
        "--models", models, "--cluster", cluster, "--replicas", 2, "--replica-cpus", 0.5, log=tmp_path / "log"
    ).start()  # fmt: skip
    try:
        replicas = []  # (pid, parent): a replica's parent is the raylet of its node
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and b"ServeReplica:attentionseg" in (entry / "cmdline").read_bytes():
                    replicas.append(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]))
            except OSError:
                continue
        assert len(replicas) == 2 and len(set(replicas)) == 2, replicas
        definition = load_dataset(dataset)
        image = read_case_image(definition.cases[0], definition)
        local = open_predictor(good, device="cpu").predict(image).label_image.array
        remote = open_predictor(f"{server.url}/models/phantom").predict(image).label_image.array
        np.testing.assert_array_equal(remote, local)
    finally:
        server.stop()
