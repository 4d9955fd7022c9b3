"""Benchmark: the trainer's training steps per second against a plain MONAI training loop.

Both sides train the same network (registry ``--model``, default configuration unless
``--compact``) with the same batch size, patch size, loss (Dice + CE), optimiser (AdamW) and
data (the dataset's training cases of fold 0), with data loading in the training process:

- ours: ``attentionseg train`` (``Trainer``) for ``--epochs`` epochs of ``--iterations`` batches;
  the rate is iterations / seconds of the last epoch's training (the ``epoch`` event's
  ``seconds``: loading, augmentation, forward, backward, optimiser step; no validation);
- plain MONAI: the loop of MONAI's tutorials (LoadImaged, EnsureChannelFirstd,
  NormalizeIntensityd, SpatialPadd, RandCropByPosNegLabeld, RandFlipd on every axis, CacheDataset,
  DataLoader, DiceCELoss, AdamW), timed over the same number of iterations after one warm-up epoch.

The two sides run alternately ``--repeats`` times in one process; the script prints the median
steps/s of each and their ratio (ours / plain; goal >= 1).

Run from the repository root:
    .venv/bin/python bench/bench_training.py --data ../shared/data/hippocampus/dataset.json [--model unet]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))


def ours(args, patch: list[int], seed: int) -> float:
    from AttentionSegLib.progress import read_events
    from AttentionSegLib.training.config import TrainingConfig
    from AttentionSegLib.training.trainer import train

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        config = TrainingConfig(
            dataset=str(args.data),
            model=args.model,
            run_dir=str(run_dir),
            epochs=args.epochs,
            patch_size=patch,
            batch_size=args.batch,
            iterations_per_epoch=args.iterations,
            loss="dice_ce",
            optimizer="adamw",
            val_every=10**6,
            compact=args.compact,
            seed=seed,
            device=args.device,
            options={"deep_supervision": False} if _has_deep_supervision(args.model) else {},
        )
        train(config)
        epochs = [event for event in read_events(run_dir / "progress.jsonl")[0] if event["event"] == "epoch"]
    return args.iterations / epochs[-1]["seconds"]


def _has_deep_supervision(name: str) -> bool:
    from AttentionSegLib.models import get_model_info

    return get_model_info(name).deep_supervision


def plain_monai(args, patch: list[int], seed: int) -> float:
    import torch
    from monai import transforms as T
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss

    from AttentionSegLib.data.dataset import load_dataset
    from AttentionSegLib.data.splits import resolve_split
    from AttentionSegLib.models import build_model, get_model_info

    definition = load_dataset(args.data)
    split = resolve_split(definition, "fold:0")
    files = [
        {"image": [str(p) for p in definition.case(i).images], "label": str(definition.case(i).label)}
        for i in split["train"]
    ]
    keys = ["image", "label"]
    transforms = T.Compose(
        [
            T.LoadImaged(keys, image_only=True),
            T.EnsureChannelFirstd(keys),
            T.NormalizeIntensityd("image", channel_wise=True),
            T.SpatialPadd(keys, spatial_size=patch),
            T.RandCropByPosNegLabeld(keys, "label", spatial_size=patch, pos=1, neg=1, num_samples=1),
            *[T.RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(patch))],
            T.EnsureTyped(keys, track_meta=False),
        ]
    )
    transforms.set_random_state(seed)
    dataset = CacheDataset(files, transforms, progress=False)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=0)
    info = get_model_info(args.model)
    options = dict(info.compact_options) if args.compact else {}
    torch.manual_seed(seed)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    network = build_model(
        args.model, len(patch), definition.n_channels, len(definition.labels) + 1, patch, **options
    ).to(device)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4, weight_decay=1e-5)

    def run(iterations: int) -> float:
        network.train()
        done, started = 0, time.perf_counter()
        while done < iterations:
            for batch in loader:
                image, label = batch["image"].to(device), batch["label"].to(device)
                optimizer.zero_grad()
                loss = loss_function(network(image), label)
                loss.backward()
                optimizer.step()
                done += 1
                if done == iterations:
                    break
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    for _ in range(args.epochs - 1):  # warm-up, as the trainer's first epochs
        run(args.iterations)
    return args.iterations / run(args.iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hippocampus" / "dataset.json")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--compact", action="store_true")
    parser.add_argument("--patch", type=int, nargs="+", default=[48, 64, 48])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    rates: dict[str, list[float]] = {"ours": [], "plain MONAI": []}
    for repeat in range(args.repeats):
        rates["ours"].append(ours(args, args.patch, seed=repeat))
        rates["plain MONAI"].append(plain_monai(args, args.patch, seed=repeat))
        print(
            f"repeat {repeat + 1}: ours {rates['ours'][-1]:.2f} steps/s, plain MONAI "
            f"{rates['plain MONAI'][-1]:.2f} steps/s",
            flush=True,
        )
    ours_rate, plain_rate = (statistics.median(values) for values in rates.values())
    print(
        f"\nmodel {args.model}{' (compact)' if args.compact else ''}, patch {'x'.join(map(str, args.patch))}, "
        f"batch {args.batch}, {args.iterations} iterations, device {args.device}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"| side | steps/s (median of {args.repeats}) |\n|---|---:|\n| ours | {ours_rate:.2f} |\n"
        f"| plain MONAI | {plain_rate:.2f} |\n\nratio ours / plain MONAI: {ours_rate / plain_rate:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
