"""Benchmark: the segmentation server (``attentionseg serve``, Ray Serve) under readers, a replica
killed mid-run, and a cohort over a two-node local Ray cluster, each against a local run.

``readers``: robot readers (the protocol of ``bench_interactive_click.py``: first click at the
interior-most voxel, then on the largest error) each in its own process with its own MRML scene,
clicking through ``ClickLogic`` with the server's model (``http://127.0.0.1:PORT/models/NAME``) all
at once; the same cases are then played by one process with the model file. Prints Dice per click
(server vs local, largest difference), click latency p50/p95/max over all server clicks, failed
requests (a reader whose click raised), prompts lost (an object whose session holds fewer prompts
than the reader clicked), and the requests the clients repeated. ``--kill-replica S`` kills one
replica (SIGKILL) S seconds into the run.

``cohort``: the cases segmented by ``attentionseg segment --dataset`` in one process, then over a
two-node cluster on this machine (Ray's own test cluster, one CPU per node); compares the output
folders byte for byte and prints the wall times, their ratio and the per-case parts (read,
network, write) from which the ratio on N GPU nodes is argued in RESULTS.md.

Run from the repository root (the server and cluster on loopback/this machine only):
    .venv/bin/python bench/bench_serve.py readers MODEL.pt DATASET.json --readers 4
    .venv/bin/python bench/bench_serve.py readers MODEL.pt DATASET.json --readers 4 --kill-replica 20
    .venv/bin/python bench/bench_serve.py cohort AUTOMATIC.pt DATASET.json --cases 52 --work DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))
sys.path.insert(0, str(ROOT / "bench"))


# ------------------------------------------------------------------------------ one reader
def reader(args) -> int:
    """One reader process: its cases through ClickLogic with ``args.model``; writes a JSON file."""
    from bench_interactive_click import LogicTool

    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image, read_case_label
    from AttentionSegLib.evaluation.interactive import run_robot_user
    from AttentionSegLib.slicer.click_logic import ClickLogic
    from AttentionSegLib.slicer.mrml import StandaloneScene, segmentation_node_from_label_image, volume_node_from_image

    definition = load_dataset(args.dataset)
    wiring = StandaloneScene()
    logic = ClickLogic(wiring.scene)
    objects, seconds, failed, lost = [], [], [], 0
    for case_id in args.cases.split(","):
        image = read_case_image(definition.case(case_id), definition).channel(0)
        reference = read_case_label(definition.case(case_id), definition, image)
        volume = volume_node_from_image(wiring.scene, image, case_id)
        for value in (1, 2):
            if not (reference == value).any():
                continue
            segmentation = segmentation_node_from_label_image(
                wiring.scene, image.with_array(np.zeros(image.spatial_shape, np.uint8)), {}, name="work",
                reference_volume_node=volume,
            )  # fmt: skip
            tool = LogicTool(logic, wiring.scene, volume, image, args.model, segmentation, "cpu")
            try:
                result = run_robot_user(tool, reference == value, image.spacing_array_order, args.clicks,
                                        case_id=case_id, value=value, name=str(value))  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a failed request is what this counts
                failed.append(f"{case_id}/{value}: {str(error).splitlines()[0]}")
                continue
            session = logic._sessions[(segmentation.GetID(), tool.segment_id)].session
            made = sum(1 for step in result.interactions if step.kind.startswith("click"))
            lost += int(len(session.prompts.positive) + len(session.prompts.negative) != made)
            objects.append({"case": case_id, "value": value, "dice": result.dice})
            seconds += tool.seconds
            wiring.scene.RemoveNode(segmentation)
        wiring.scene.RemoveNode(volume)
    predictor = next(iter(logic.predictors._predictors.values()), None)
    client = getattr(predictor, "client", None)
    retried, round_trips = getattr(client, "retried", 0), getattr(client, "round_trips", [])
    Path(args.out).write_text(
        json.dumps(
            {
                "objects": objects,
                "seconds": seconds,
                "failed": failed,
                "lost": lost,
                "retried": retried,
                "round_trips": round_trips,
            }
        )  # fmt: skip
    )
    return 0


def _start_readers(model: str, dataset: Path, groups: list[list[str]], clicks: int, folder: Path, env: dict):
    processes = []
    folder.mkdir(parents=True, exist_ok=True)
    for index, cases in enumerate(groups):
        out = folder / f"reader{index}.json"
        command = [sys.executable, __file__, "reader", "--model", model, "--dataset", str(dataset),
                   "--cases", ",".join(cases), "--clicks", str(clicks), "--out", str(out)]  # fmt: skip
        processes.append((subprocess.Popen(command, env=env), out))
    return processes


def _collect(processes) -> list[dict]:
    results = []
    for process, out in processes:
        process.wait()
        results.append(json.loads(out.read_text()) if out.is_file() else {"failed": ["process died"], "objects": []})
    return results


def _replica_pids() -> list[int]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in listing.splitlines() if "ServeReplica:attentionseg" in line]


def readers(args) -> int:
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.serve.launch import ServerSettings, start_server, stop_server
    from AttentionSegLib.serve.tokens import hash_token

    definition = load_dataset(args.dataset)
    ids = [case.case_id for case in definition.cases][args.first : args.first + args.readers * args.cases_per_reader]
    groups = [ids[i :: args.readers] for i in range(args.readers)]
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    models = folder / "models"
    models.mkdir()
    shutil.copy(args.model, models / "clicks.pt")
    token = "bench-token"
    settings = ServerSettings(models, {hash_token(token): "bench"}, port=args.port, replicas=args.replicas,
                              replica_cpus=args.replica_cpus)  # fmt: skip
    env = {**os.environ, "ATTENTIONSEG_TOKEN": token, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    try:
        url = start_server(settings)
        # Every replica loads the model before the clock starts (a reader's first click would).
        _collect(_start_readers(f"{url}/models/clicks", args.dataset, [ids[:1]] * args.replicas, 1, folder / "w", env))
        started = time.perf_counter()
        running = _start_readers(f"{url}/models/clicks", args.dataset, groups, args.clicks, folder, env)
        killed = None
        if args.kill_replica is not None:

            def kill() -> None:
                nonlocal killed
                time.sleep(args.kill_replica)
                pids = _replica_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = time.perf_counter() - started

            threading.Thread(target=kill, daemon=True).start()
        served = _collect(running)
        server_wall = time.perf_counter() - started
    finally:
        stop_server()
    started = time.perf_counter()
    local = _collect(_start_readers(str(args.model), args.dataset, [ids], args.clicks, folder / "l", env))
    local_wall = time.perf_counter() - started
    by_key = {(o["case"], o["value"]): o["dice"] for o in local[0]["objects"]}
    served_objects = [o for result in served for o in result["objects"]]
    differences = [max(abs(a - b) for a, b in zip(o["dice"], by_key[(o["case"], o["value"])]))
                   for o in served_objects if (o["case"], o["value"]) in by_key]  # fmt: skip
    seconds = [s for result in served for s in result["seconds"]]
    local_seconds = local[0]["seconds"]
    failed = [f for result in served for f in result["failed"]]
    print(f"{args.readers} readers x {args.cases_per_reader} cases x 2 labels, {args.clicks} clicks each, "
          f"server {args.replicas} replica(s) x {args.replica_cpus:g} CPU on {os.cpu_count()} cores")  # fmt: skip
    print(f"objects: {len(served_objects)} served, {len(by_key)} local; failed requests: {len(failed)} {failed[:3]}")
    print("mean Dice per click, server: " + ", ".join(f"{v:.4f}" for v in _mean_per_click(served_objects)))
    print("mean Dice per click, local:  " + ", ".join(f"{v:.4f}" for v in _mean_per_click(local[0]["objects"])))
    print(f"largest Dice difference server vs local (any object, any click): {max(differences, default=np.nan):.6f}")
    print(f"click latency through the server (all readers at once): p50 {np.percentile(seconds, 50):.3f} s, "
          f"p95 {np.percentile(seconds, 95):.3f} s, max {max(seconds):.3f} s over {len(seconds)} clicks")  # fmt: skip
    trips = [s for result in served for s in result.get("round_trips", [])]
    if trips:
        print(f"of which the server's answer (HTTP round trip of each request): p50 {np.percentile(trips, 50):.3f} s, "
              f"p95 {np.percentile(trips, 95):.3f} s over {len(trips)} requests")  # fmt: skip
    print(f"click latency local (one reader, one process): p50 {np.percentile(local_seconds, 50):.3f} s, "
          f"p95 {np.percentile(local_seconds, 95):.3f} s")  # fmt: skip
    print(f"wall: server {server_wall:.1f} s for all readers at once; local {local_wall:.1f} s one after another")
    print(f"prompts lost: {sum(r.get('lost', 0) for r in served)}; requests repeated by the clients: "
          f"{sum(r.get('retried', 0) for r in served)}"
          + (f"; replica killed at {killed:.1f} s" if killed is not None else ""))  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def _mean_per_click(objects: list[dict]) -> list[float]:
    length = max((len(o["dice"]) for o in objects), default=0)
    padded = [o["dice"] + [o["dice"][-1]] * (length - len(o["dice"])) for o in objects]
    return list(np.mean(padded, axis=0)) if padded else []


# ------------------------------------------------------------------------------ cohort
def cohort(args) -> int:
    import ray
    from ray.cluster_utils import Cluster

    from AttentionSegLib.data.dataset import load_dataset

    definition = load_dataset(args.dataset)
    ids = [case.case_id for case in definition.cases][: args.cases]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "AttentionSeg")}
    command = [sys.executable, "-m", "AttentionSegLib", "segment", "--dataset", str(args.dataset), "--model",
               str(args.model), "--split", "all"]  # fmt: skip
    # The local run: one process (the command as a user runs it), on every core.
    subset = work / "dataset.json"
    from AttentionSegLib.data.dataset import write_subset

    write_subset(definition, ids, subset)
    command[command.index(str(args.dataset))] = str(subset)
    started = time.perf_counter()
    subprocess.run(command + ["--out-dir", str(work / "local")], env=env, check=True)
    local_wall = time.perf_counter() - started
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(args.nodes - 1):
        nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    try:
        started = time.perf_counter()
        subprocess.run(command + ["--out-dir", str(work / "cluster"), "--cluster", nodes.address], env=env, check=True)
        cluster_wall = time.perf_counter() - started
        # The parts of one case, measured in one worker process (one CPU, as a cluster task has).
        started = time.perf_counter()
        ray.init(address=nodes.address)
        connect = time.perf_counter() - started
        parts = ray.get(ray.remote(_case_parts).options(num_cpus=1).remote(str(args.model), str(subset), ids[:8]))
        # What a task costs beyond its work: empty tasks, as many as cases, on the same slots.
        empty = ray.remote(_nothing).options(num_cpus=1, scheduling_strategy="SPREAD")
        ray.get([empty.remote() for _ in range(4)])  # workers started
        started = time.perf_counter()
        ray.get([empty.remote() for _ in ids])
        per_task = (time.perf_counter() - started) * args.nodes / len(ids)
    finally:
        ray.shutdown()
        nodes.shutdown()
    local_files = {p.name: p.read_bytes() for p in (work / "local").iterdir()}
    cluster_files = {p.name: p.read_bytes() for p in (work / "cluster").iterdir()}
    same = local_files == cluster_files
    print(f"{len(ids)} cases of {definition.name}, {args.model}")
    print(f"outputs byte-identical: {same} ({len(local_files)} files)")
    print(f"wall: one process {local_wall:.1f} s; {args.nodes}-node cluster (1 CPU each) {cluster_wall:.1f} s; "
          f"ratio one process / cluster {local_wall / cluster_wall:.2f}")  # fmt: skip
    print("per case on one CPU (s): " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))
    print(f"cluster: connect {connect:.2f} s; a task's own cost (empty task, per slot) {per_task * 1000:.1f} ms")
    return 0


def _nothing() -> None:
    return None


def _case_parts(model: str, dataset: str, ids: list[str]) -> dict:
    """Mean seconds per case of reading, the network and writing, in a worker with one CPU."""
    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.preprocessing import read_case_image
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.image import write_image

    definition = load_dataset(dataset)
    started = time.perf_counter()
    predictor = Predictor(model, device="cpu")
    load = time.perf_counter() - started
    read = network = write = 0.0
    folder = Path(tempfile.mkdtemp())
    for case_id in ids:
        started = time.perf_counter()
        image = read_case_image(definition.case(case_id), definition)
        read += time.perf_counter() - started
        started = time.perf_counter()
        prediction = predictor.predict(image)
        network += time.perf_counter() - started
        started = time.perf_counter()
        write_image(prediction.label_image, folder / f"{case_id}.nii.gz")
        write += time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    n = len(ids)
    return {"model load (once per worker)": load, "read": read / n, "predict": network / n, "write": write / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("reader")
    for flag in ("--model", "--dataset", "--cases", "--out"):
        one.add_argument(flag, required=True)
    one.add_argument("--clicks", type=int, default=5)
    many = commands.add_parser("readers")
    many.add_argument("model", type=Path)
    many.add_argument("dataset", type=Path)
    many.add_argument("--readers", type=int, default=4)
    many.add_argument("--cases-per-reader", type=int, default=2)
    many.add_argument("--first", type=int, default=0, help="first case of the dataset's list")
    many.add_argument("--clicks", type=int, default=5)
    many.add_argument("--replicas", type=int, default=2)
    many.add_argument("--replica-cpus", type=float, default=1.0)
    many.add_argument("--port", type=int, default=8791)
    many.add_argument("--kill-replica", type=float, metavar="SECONDS")
    batch = commands.add_parser("cohort")
    batch.add_argument("model", type=Path)
    batch.add_argument("dataset", type=Path)
    batch.add_argument("--cases", type=int, default=52)
    batch.add_argument("--nodes", type=int, default=2)
    batch.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    return {"reader": reader, "readers": readers, "cohort": cohort}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
