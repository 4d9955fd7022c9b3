"""``attentionseg serve`` on loopback (Ray Serve in a child process) with two users: refusals,
isolation, results equal to a local run, bounded uploads, a replica killed while readers click, a
server restarted between clicks, and a bounded load of four readers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray")

from serve.server_process import ServerProcess, free_port  # noqa: E402

from AttentionSegLib.data.dataset import load_dataset  # noqa: E402
from AttentionSegLib.data.preprocessing import read_case_image, read_case_label  # noqa: E402
from AttentionSegLib.errors import AttentionSegError  # noqa: E402
from AttentionSegLib.inference.model_source import open_predictor  # noqa: E402
from AttentionSegLib.interactive.session import InteractiveSession  # noqa: E402
from AttentionSegLib.regions import interior_point  # noqa: E402
from AttentionSegLib.serve import wire  # noqa: E402
from AttentionSegLib.serve.client import ServerClient, ServerError, UploadedImage  # noqa: E402
from AttentionSegLib.serve.tokens import add_user  # noqa: E402
from conftest import assert_bad_input, attentionseg  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained_models, interactive_model):
    """A server of an automatic and an interactive phantom model, two replicas, uploads up to 1 MiB;
    users alice and bob."""
    folder = tmp_path_factory.mktemp("serve")
    models = folder / "models"
    models.mkdir()
    dataset, (good, _) = trained_models
    shutil.copy(good, models / "phantom.pt")
    shutil.copy(interactive_model[1]["model_file"], models / "clicks.pt")
    tokens = {user: add_user(folder / "tokens", user) for user in ("alice", "bob")}
    process = ServerProcess(
        "--models",
        models,
        "--tokens",
        folder / "tokens",
        "--replicas",
        2,
        "--replica-cpus",
        0.5,
        "--max-upload-mb",
        1,
        log=folder / "server.log",
    ).start()
    yield {"process": process, "models": models, "tokens": tokens, "dataset": dataset, "folder": folder}
    process.stop()


def _case(dataset, index: int = 0):
    definition = load_dataset(dataset)
    case = definition.cases[index]
    image = read_case_image(case, definition)
    return image, read_case_label(case, definition, image)


def _raw(url: str, method: str = "GET", token: str | None = None, body: bytes | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_no_token_or_a_wrong_one_gets_401_and_nothing_else(server):
    url, alice = server["process"].url, server["tokens"]["alice"]
    for method, path in (
        ("GET", "/models"),
        ("GET", "/models/phantom"),
        ("PUT", "/images/" + "0" * 64),
        ("POST", "/models/phantom/segment"),
        ("POST", "/models/clicks/prompt"),
    ):
        for token in (None, alice + "x", ""):
            status, body = _raw(url + path, method, token, b"x" if method != "GET" else None)
            assert status == 401, (method, path, token, body)
            assert json.loads(body) == {"detail": "token refused"}
    status, body = _raw(url + "/models", token=alice)
    assert status == 200
    served = {model["name"]: model for model in json.loads(body)["models"]}
    assert set(served) == {"phantom", "clicks"}
    assert served["clicks"]["interactive"] and not served["phantom"]["interactive"]
    assert served["phantom"]["labels"] == {"1": "liver", "2": "spleen"}


def test_a_server_model_segments_exactly_as_its_file(server, monkeypatch):
    monkeypatch.setenv("ATTENTIONSEG_TOKEN", server["tokens"]["alice"])
    image, _ = _case(server["dataset"])
    local = open_predictor(server["models"] / "phantom.pt", device="cpu").predict(image, uncertainty="entropy")
    remote = open_predictor(f"{server['process'].url}/models/phantom").predict(image, uncertainty="entropy")
    np.testing.assert_array_equal(remote.label_image.array, local.label_image.array)
    assert remote.label_image.spacing == image.spacing and remote.label_image.origin == image.origin
    np.testing.assert_array_equal(remote.label_image.direction, image.direction)
    np.testing.assert_allclose(remote.uncertainty.array, local.uncertainty.array, atol=1e-6)
    assert remote.device.startswith("server")


def test_the_cli_segments_with_a_server_model_and_refuses_in_one_line(server, tmp_path):
    url, alice = server["process"].url, server["tokens"]["alice"]
    image_path = load_dataset(server["dataset"]).cases[0].images[0]
    local, remote = tmp_path / "local.nii.gz", tmp_path / "remote.nii.gz"
    assert (
        attentionseg("segment", image_path, "--model", server["models"] / "phantom.pt", "--out", local).returncode == 0
    )
    result = attentionseg(
        "segment", image_path, "--model", f"{url}/models/phantom", "--out", remote, env={"ATTENTIONSEG_TOKEN": alice}
    )
    assert result.returncode == 0, result.stderr
    assert remote.read_bytes() == local.read_bytes()
    refused = attentionseg(
        "segment",
        image_path,
        "--model",
        f"{url}/models/phantom",
        "--out",
        tmp_path / "x.nii.gz",
        env={"ATTENTIONSEG_TOKEN": "wrong"},
    )
    assert_bad_input(refused, "token refused")
    assert_bad_input(
        attentionseg(
            "segment",
            image_path,
            "--model",
            f"{url}/models/liver",
            "--out",
            tmp_path / "x.nii.gz",
            env={"ATTENTIONSEG_TOKEN": alice},
        ),
        "'liver' is not served here",
    )
    closed = f"http://127.0.0.1:{free_port()}/models/phantom"
    assert_bad_input(
        attentionseg(
            "segment", image_path, "--model", closed, "--out", tmp_path / "x.nii.gz", env={"ATTENTIONSEG_TOKEN": alice}
        ),
        "server unreachable",
    )
    assert not (tmp_path / "x.nii.gz").exists()


def test_one_user_never_reaches_another_users_image_and_uploads_are_bounded(server):
    url, tokens = server["process"].url, server["tokens"]
    image, _ = _case(server["dataset"])
    uploaded = UploadedImage(image)
    alice, bob = ServerClient(url, tokens["alice"]), ServerClient(url, tokens["bob"])
    alice.upload(uploaded.body, uploaded.digest)
    request = wire.encode({"image": uploaded.digest})
    status, body = _raw(f"{url}/models/phantom/segment", "POST", tokens["alice"], request)
    assert status == 200
    # Bob names Alice's image by its hash: the server does not have it for him.
    status, body = _raw(f"{url}/models/phantom/segment", "POST", tokens["bob"], request)
    assert status == 404 and json.loads(body)["code"] == "image-unknown"
    bob.upload(uploaded.body, uploaded.digest)  # his own copy, then it works for him
    assert _raw(f"{url}/models/phantom/segment", "POST", tokens["bob"], request)[0] == 200
    # A body that is not what its address says, or larger than the bound, is refused.
    assert _raw(f"{url}/images/{'0' * 64}", "PUT", tokens["alice"], uploaded.body)[0] == 400
    large = wire.encode(
        {"spacing": [1, 1, 1], "origin": [0, 0, 0], "direction": np.eye(3).tolist()},
        {"image": np.zeros((1, 80, 80, 80), np.float32)},
    )
    import hashlib

    assert _raw(f"{url}/images/{hashlib.sha256(large).hexdigest()}", "PUT", tokens["alice"], large)[0] == 413


def _clicks(reference: np.ndarray, spacing) -> list[tuple[tuple[int, ...], bool]]:
    """A fixed reader: a click inside label 1, then inside label 1's far part, then one in label 2
    (negative), repeated."""
    first = interior_point(reference == 1, spacing)
    inside = [tuple(int(v) for v in p) for p in np.argwhere(reference == 1)[:: max(1, (reference == 1).sum() // 3)]]
    other = tuple(int(v) for v in interior_point(reference == 2, spacing))
    return [(first, True), (inside[-1], True), (other, False), (inside[0], True)]


def _session_masks(predictor, image, clicks) -> list[np.ndarray]:
    session = InteractiveSession.for_predictor(predictor, [image])
    masks = []
    for voxel, positive in clicks:
        session.add_click(voxel, positive)
        masks.append(session.mask.copy())
    return masks


def test_readers_click_through_a_killed_replica_and_a_restarted_server_without_losing_a_prompt(server, monkeypatch):
    monkeypatch.setenv("ATTENTIONSEG_TOKEN", server["tokens"]["bob"])
    process = server["process"]
    readers = []
    for index in range(4):
        image, reference = _case(server["dataset"], index)
        clicks = _clicks(reference, image.spacing_array_order) * 2
        expected = _session_masks(open_predictor(server["models"] / "clicks.pt", device="cpu"), image, clicks)
        readers.append((image, clicks, expected))
    remote = open_predictor(f"{process.url}/models/clicks")
    results: dict[int, list] = {}
    seconds: list[float] = []
    half = threading.Barrier(len(readers) + 1)

    def read(index: int) -> None:
        image, clicks, _ = readers[index]
        session = InteractiveSession.for_predictor(remote, [image])
        masks = []
        for number, (voxel, positive) in enumerate(clicks):
            if number == len(clicks) // 2:
                half.wait(120)  # then every reader clicks at once, and a replica is killed meanwhile
            started = time.perf_counter()
            session.add_click(voxel, positive)
            seconds.append(time.perf_counter() - started)
            masks.append(session.mask.copy())
        results[index] = [masks, session]

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(readers))]
    for thread in threads:
        thread.start()
    replicas = process.replica_pids()
    assert len(replicas) == 2
    half.wait(120)
    time.sleep(0.05)  # the readers' requests are in flight
    os.kill(replicas[0], signal.SIGKILL)
    for thread in threads:
        thread.join(300)
    assert sorted(results) == list(range(len(readers)))
    for index, (_, clicks, expected) in enumerate(readers):
        masks, session = results[index]
        assert len(session.prompts.positive) + len(session.prompts.negative) == len(clicks)
        for got, want in zip(masks, expected):
            np.testing.assert_array_equal(got, want)
    retried = remote.client.retried
    print(
        f"4 readers, {len(seconds)} clicks ({retried} retried): p95 {np.percentile(seconds, 95):.3f} s, "
        f"max {max(seconds):.3f} s"
    )
    # The server restarts between two clicks: the next click uploads the image again and goes on.
    image, clicks, expected = readers[0]
    session = InteractiveSession.for_predictor(remote, [image])
    session.add_click(*clicks[0])
    process.stop()
    with pytest.raises(ServerError, match="server unreachable"):
        ServerClient(process.url, server["tokens"]["bob"], retries=0).models()
    process.start()
    session.add_click(*clicks[1])
    np.testing.assert_array_equal(session.mask, expected[1])


def test_a_server_model_refuses_what_a_local_one_refuses(server, monkeypatch):
    monkeypatch.setenv("ATTENTIONSEG_TOKEN", server["tokens"]["alice"])
    image, _ = _case(server["dataset"])
    with pytest.raises(AttentionSegError, match="interactive model segments from clicks"):
        open_predictor(f"{server['process'].url}/models/clicks").predict(image)
    session = InteractiveSession.for_predictor(open_predictor(f"{server['process'].url}/models/clicks"), [image])
    with pytest.raises(AttentionSegError, match="outside the image"):
        session.add_click((500, 0, 0))
    with pytest.raises(AttentionSegError, match="automatic model"):
        InteractiveSession.for_predictor(open_predictor(f"{server['process'].url}/models/phantom"), [image])


def test_the_slicer_logic_segments_and_clicks_with_a_server_model_as_with_its_file(server, monkeypatch):
    pytest.importorskip("slicer")
    from AttentionSegLib.slicer.click_logic import ClickLogic
    from AttentionSegLib.slicer.mrml import StandaloneScene, volume_node_from_image
    from AttentionSegLib.slicer.segment_logic import SegmentLogic
    from AttentionSegLib.slicer.segments import segment_mask

    monkeypatch.setenv("ATTENTIONSEG_TOKEN", server["tokens"]["alice"])
    image, reference = _case(server["dataset"], 1)
    image = image.channel(0)  # a volume node holds one channel
    url, models = server["process"].url, server["models"]
    masks = {}
    for where, automatic, interactive in (
        ("file", models / "phantom.pt", models / "clicks.pt"),
        ("server", f"{url}/models/phantom", f"{url}/models/clicks"),
    ):
        scene = StandaloneScene().scene
        volume = volume_node_from_image(scene, image, "case")
        node = SegmentLogic(scene).segment([volume], automatic, device="cpu")
        segmentation = node.GetSegmentation()
        found = {
            segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegmentID(i)
            for i in range(segmentation.GetNumberOfSegments())
        }
        masks[where] = {name: segment_mask(scene, node, segment_id, volume) for name, segment_id in found.items()}
        logic = ClickLogic(scene)
        for voxel, positive in _clicks(reference, image.spacing_array_order)[:2]:
            k, j, i = voxel
            lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
            segment_id = logic.click_to_segment(
                volume,
                interactive,
                (-lps[0], -lps[1], lps[2]),
                node,
                None if "object" not in masks[where] else masks[where]["object"],
                positive=positive,
                device="cpu",
            )
            masks[where]["object"] = segment_id
        masks[where]["object"] = segment_mask(scene, node, segment_id, volume)
    assert set(masks["server"]) == set(masks["file"]) == {"liver", "spleen", "object"}
    assert masks["file"]["object"].any() and masks["file"]["liver"].any()
    for name, mask in masks["file"].items():
        np.testing.assert_array_equal(masks["server"][name], mask, err_msg=name)


def test_the_web_workspace_lists_server_models_and_uses_them_like_files(server, monkeypatch, tmp_path):
    pytest.importorskip("slicer")
    from AttentionSegLib.slicer.mrml import StandaloneScene
    from AttentionSegLib.web.workspace import Workspace

    monkeypatch.setenv("ATTENTIONSEG_TOKEN", server["tokens"]["bob"])
    url = server["process"].url
    spaces = {
        "file": Workspace(StandaloneScene().scene, tmp_path / "a", server["models"]),
        "server": Workspace(StandaloneScene().scene, tmp_path / "b", tmp_path / "none", server_url=url),
    }
    host = url.split("//", 1)[1]
    names = {"file": ("phantom", "clicks"), "server": (f"phantom ({host})", f"clicks ({host})")}
    assert f"{url}/models/clicks" in spaces["server"].models()
    definition = load_dataset(server["dataset"])
    image_path = definition.cases[2].images[0]
    image, reference = _case(server["dataset"], 2)
    voxels = {}
    for where, space in spaces.items():
        automatic, interactive = names[where]
        assert space.is_interactive(interactive) and not space.is_interactive(automatic)
        space.load_volume(image_path)
        space.start_segmentation(automatic, "cpu")  # a child process, as the page runs it
        deadline = time.monotonic() + 120
        while space.poll_segmentation()[0] == "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert space.poll_segmentation()[0] == "done", space.poll_segmentation()
        first = interior_point(reference == 2, image.spacing_array_order)
        k, j, i = first
        lps = image.index_to_physical() @ np.array([i, j, k, 1.0])
        space.click((-lps[0], -lps[1], lps[2]), True, interactive, "cpu")
        voxels[where] = space.segment_voxels()
    assert voxels["server"] == voxels["file"] and voxels["file"]["object 1"] > 0
