"""Benchmark: what ``attentionseg segment`` costs around the network, one click's latency, and peak
memory on a large volume.

Two volumes:

- hippocampus: a real case (``--hippocampus-image``) with a model file trained on that dataset
  (``--hippocampus-model``); skipped when not given;
- large: a synthetic CT-like volume of ``--large-shape`` voxels (array order, default 300 x 512 x 512)
  at 1.0 x 0.8 x 0.8 mm, written as int16 .nii.gz, segmented by a model file built here around a
  UNet (``--large-network small``: channels 8-64; ``default``: the registry's unet, 12.9 M
  parameters; random weights: the timing does not depend on them, but their noisy output is the
  worst case for the compressed write) with patch
  64 x 128 x 128, CT normalisation and a target spacing of 2.0 x 1.5 x 1.5 mm, as a CT model
  would have. Its pipeline therefore includes resampling down and back up.

For each volume, in one run, alternating ``--repeats`` times:

- end to end: read the file, ``Predictor.predict`` (channels, resampling, normalisation, sliding
  window, back to the input grid, argmax, label values), write the label .nii.gz;
- network only: MONAI's ``sliding_window_inference`` with the bare network on the already
  preprocessed tensor (same patch, overlap 0.5, Gaussian blending, 4 windows per batch);
- one window: ``Predictor.predict_window`` at the volume's centre (click-to-segment).

The ratio end to end / network only is the pipeline's overhead (goal <= 1.10). Peak memory is the
maximum resident set size of a child process that segments the large volume once end to end
(goal <= 4 GB on the CPU).

Run from the repository root:
    .venv/bin/python bench/bench_inference.py --hippocampus-model RUN/model.pt \\
        --hippocampus-image ../shared/data/hippocampus/imagesTr/hippocampus_001.nii.gz
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))

LARGE_SPACING_IJK_MM = (0.8, 0.8, 1.0)


NETWORKS = {
    "small": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1},
    "default": {},  # the registry's unet: channels 32-320, 4 strides, 2 residual units (12.9 M)
}


def large_model_file(path: Path, network: str = "small") -> Path:
    import torch

    from AttentionSegLib.inference.model_file import ModelFile
    from AttentionSegLib.models import build_model

    torch.manual_seed(0)
    patch = [64, 128, 128]
    options = dict(NETWORKS[network])
    network = build_model("unet", 3, 1, 4, patch, **options)
    labels = [
        {"value": v, "name": n, "color": [0.2 * v, 0.4, 0.8 - 0.2 * v]} for v, n in enumerate(["bg", "a", "b", "c"])
    ]
    ModelFile(
        network={
            "name": "unet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 4,
            "patch_size": patch,
            "clinical_features": 0,
            "options": options,
        },
        channel_names=["CT"],
        labels=labels,
        output_activation="softmax",
        preprocessing={
            "target_spacing": [2.0, 1.5, 1.5],
            "normalization": {
                "kind": "ct",
                "mean": [40.0],
                "std": [300.0],
                "clip_low": [-1000.0],
                "clip_high": [1500.0],
            },
            "image_kind": "ct",
            "slice_wise": False,
            "patch_size": patch,
            "mirror_axes": [0, 1, 2],
        },
        training={"note": "random weights, for timing only"},
        state_dict=network.state_dict(),
    ).save(path)
    return path


def large_volume(path: Path, shape: tuple[int, ...]) -> Path:
    import numpy as np

    from AttentionSegLib.io.image import Image, write_image

    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((j - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((i - shape[2] / 2) / (shape[2] * 0.45)) ** 2 < 1
    volume = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, shape, dtype=np.int16)
    write_image(Image(volume, spacing=LARGE_SPACING_IJK_MM), path)
    return path


def measure(model_path: Path, image_path: Path, device: str, repeats: int, out_dir: Path) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from AttentionSegLib.devices import autocast
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.image import read_image
    from AttentionSegLib.io.segmentation_file import write_label_image

    predictor = Predictor(model_path, device=device)
    image = read_image(image_path)
    array, _ = predictor.preprocess(predictor.stack_channels(image))
    tensor = torch.from_numpy(array)[None].to(predictor.device)

    def sync():
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()

    stages: dict[str, list[float]] = {"read": [], "preprocess": [], "network": [], "postprocess": [], "write": []}

    def end_to_end() -> float:
        started = time.perf_counter()
        loaded = read_image(image_path)
        stages["read"].append(time.perf_counter() - started)
        prediction = predictor.predict(loaded)
        for stage, seconds in prediction.seconds.items():
            stages[stage].append(seconds)
        written = time.perf_counter()
        write_label_image(prediction.label_image, out_dir / "labels.nii.gz", predictor.labels, overwrite=True)
        stages["write"].append(time.perf_counter() - written)
        return time.perf_counter() - started

    @torch.no_grad()
    def network_only() -> float:
        def forward(window):
            with autocast(predictor.device):
                return predictor.network(window)

        sync()
        started = time.perf_counter()
        sliding_window_inference(tensor, predictor.patch, 4, forward, overlap=0.5, mode="gaussian")
        sync()
        return time.perf_counter() - started

    def one_window() -> float:
        sync()
        started = time.perf_counter()
        predictor.predict_window(image, [s // 2 for s in image.spatial_shape])
        sync()
        return time.perf_counter() - started

    one_window()  # warm-up: first calls allocate
    network_only()
    times: dict[str, list[float]] = {"end_to_end": [], "network_only": [], "one_window": []}
    for _ in range(repeats):
        times["end_to_end"].append(end_to_end())
        times["network_only"].append(network_only())
        times["one_window"].append(one_window())
    medians = {key: statistics.median(values) for key, values in times.items()}
    return {
        "shape": list(image.spatial_shape),
        "model_grid": list(array.shape[1:]),
        "patch": list(predictor.patch),
        "device": str(predictor.device),
        **{f"{key}_s": value for key, value in medians.items()},
        "ratio": medians["end_to_end"] / medians["network_only"],
        "stages_s": {stage: statistics.median(values) for stage, values in stages.items()},
        "all": times,
    }


def peak_memory_child(model_path: Path, image_path: Path, device: str, out_dir: Path) -> None:
    """Runs in a fresh process: import, then one end-to-end segmentation; prints JSON."""
    from AttentionSegLib.inference.predictor import Predictor
    from AttentionSegLib.io.image import read_image
    from AttentionSegLib.io.segmentation_file import write_label_image

    predictor = Predictor(model_path, device=device)
    before = _peak_rss_mib()
    prediction = predictor.predict(read_image(image_path))
    write_label_image(prediction.label_image, out_dir / "labels.nii.gz", predictor.labels, overwrite=True)
    print(json.dumps({"after_import_and_model_mib": before, "peak_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it does not carry the parent's
    peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hippocampus-model", type=Path)
    parser.add_argument("--hippocampus-image", type=Path)
    parser.add_argument("--large-shape", type=int, nargs=3, default=[300, 512, 512], metavar=("K", "J", "I"))
    parser.add_argument(
        "--large-network", choices=sorted(NETWORKS), default="small", help="UNet configuration of the large model"
    )
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-memory-child", nargs=2, type=Path, metavar=("MODEL", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        out_dir = Path(folder)
        if args.peak_memory_child:
            peak_memory_child(*args.peak_memory_child, args.device, out_dir)
            return 0
        import torch

        rows = {}
        if args.hippocampus_model and args.hippocampus_image:
            rows["hippocampus"] = measure(
                args.hippocampus_model, args.hippocampus_image, args.device, args.repeats, out_dir
            )
        model = large_model_file(out_dir / "large_model.pt", args.large_network)
        volume = large_volume(out_dir / "large.nii.gz", tuple(args.large_shape))
        rows["large"] = measure(model, volume, args.device, args.repeats, out_dir)
        memory: dict = {"skipped": True}
        if not args.skip_memory:
            child = subprocess.run(
                [sys.executable, __file__, "--device", args.device, "--peak-memory-child", str(model), str(volume)],
                capture_output=True,
                text=True,
            )
            memory = (
                json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {"error": child.stderr}
            )

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {args.device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"repeats: {args.repeats} (medians); large model: unet '{args.large_network}' {NETWORKS[args.large_network]}\n"
    )
    print(
        "| volume | voxels (array order) | model grid | patch | end to end s | network only s | ratio | one window s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {'x'.join(map(str, row['shape']))} | {'x'.join(map(str, row['model_grid']))} | "
            f"{'x'.join(map(str, row['patch']))} | {row['end_to_end_s']:.3f} | {row['network_only_s']:.3f} | "
            f"{row['ratio']:.3f} | {row['one_window_s']:.3f} |"
        )
    print("\nend to end by stage (medians, s):")
    for name, row in rows.items():
        print(f"  {name}: " + ", ".join(f"{stage} {seconds:.3f}" for stage, seconds in row["stages_s"].items()))
    print(f"\npeak memory, large volume end to end (child process): {json.dumps(memory)}")
    print("\nraw seconds:", json.dumps({name: row["all"] for name, row in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
