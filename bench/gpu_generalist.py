"""Train the promptable generalist on a lent GPU machine, where neither ``../shared/data`` nor our
file-reading libraries are at hand.

Two steps:

``pack COLLECTION DATA_ROOT PACK_DIR`` (here): the collection's training cases as they are in memory
after loading (normalised image quantised to 8 bits, labels), one compressed ``.npz`` plus the
collection itself. The pack is derived from the datasets: keep it in a folder git ignores (it is
carried to the machine, never committed).

``train PACK_DIR --out RUN_DIR ...`` (there): ``train_promptable`` on the packed cases, with sample
workers; the same run folder and model file as ``attentionseg train-generalist``.

    python bench/gpu_generalist.py pack AttentionSeg/Resources/Models/promptable-generalist.collection.json \\
        ../shared/data .gpu-pack
    python bench/gpu_generalist.py train .gpu-pack --out /tmp/run \\
        --init AttentionSeg/Resources/Models/promptable-generalist.pt \\
        --minutes 6.3 --steps 444 --batch-size 16 --workers 14 --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "AttentionSeg"))

# Modules our package imports at its top but this run never calls (it reads no image file or DICOM):
# the GPU machine has none of them and cannot install them (nothing can be fetched there), and
# SimpleITK's wheel alone is larger than what may be sent. Empty modules stand in for the import
# only, and only where the real one is missing.
_FILE_READERS = ("SimpleITK", "nibabel", "pydicom", "highdicom", "nrrd")


def _stand_in_for_missing_file_readers() -> list[str]:
    missing = [name for name in _FILE_READERS if importlib.util.find_spec(name) is None]
    for name in missing:
        sys.modules[name] = types.ModuleType(name)
    return missing


def pack(collection_file: Path, data_root: Path, out: Path) -> None:
    from AttentionSegLib.data.collection import load_collection
    from AttentionSegLib.training.promptable.samples import load_cases

    started = time.perf_counter()
    collection = load_collection(collection_file, data_root)
    cases = load_cases(collection)
    out.mkdir(parents=True, exist_ok=True)
    arrays, index = {}, []
    for number, case in enumerate(cases):
        # The percentile normalisation leaves the image in [0, 1]: 8 bits keep it to 1/255.
        arrays[f"image{number}"] = np.round(np.clip(case.image, 0, 1) * 255).astype(np.uint8)
        arrays[f"label{number}"] = case.label.astype(np.uint8 if case.label.max() < 256 else np.int16)
        index.append((case.dataset, case.case_id, case.spacing, case.values))
    np.savez_compressed(out / "cases.npz", **arrays)
    (out / "collection.pkl").write_bytes(pickle.dumps((collection, index)))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"packed {len(cases)} cases into {out} ({size:.1f} MiB) in {time.perf_counter() - started:.0f} s")


def load_pack(folder: Path):
    from AttentionSegLib.training.promptable.samples import LoadedCase

    collection, index = pickle.loads((folder / "collection.pkl").read_bytes())
    arrays = np.load(folder / "cases.npz")
    cases = [
        LoadedCase(
            dataset,
            case_id,
            (arrays[f"image{number}"].astype(np.float32) / 255.0),
            arrays[f"label{number}"].astype(np.int16),
            tuple(spacing),
            tuple(values),
        )
        for number, (dataset, case_id, spacing, values) in enumerate(index)
    ]
    return collection, cases


def train(args) -> None:
    missing = _stand_in_for_missing_file_readers()
    if missing:
        print(f"no {', '.join(missing)} here: packed cases only", flush=True)
    from AttentionSegLib.training.promptable.trainer import PromptableConfig, train_promptable

    started = time.perf_counter()
    collection, cases = load_pack(args.pack)
    print(f"unpacked {len(cases)} cases in {time.perf_counter() - started:.0f} s", flush=True)
    config = PromptableConfig(
        collection=args.collection,
        data_root="packed",
        run_dir=str(args.out),
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        workers=args.workers,
        device=args.device,
        init=str(args.init) if args.init else None,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    train_promptable(config, resume=args.resume, log=lambda line: print(line, flush=True), data=(collection, cases))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="pack the collection's training cases (here)")
    packing.add_argument("collection", type=Path)
    packing.add_argument("data_root", type=Path)
    packing.add_argument("out", type=Path)
    training = commands.add_parser("train", help="train on a pack (on the GPU machine)")
    training.add_argument("pack", type=Path)
    training.add_argument("--out", type=Path, required=True)
    training.add_argument("--collection", default="promptable-generalist.collection.json")
    training.add_argument("--init", type=Path)
    training.add_argument("--steps", type=int, default=3000)
    training.add_argument("--minutes", type=float)
    training.add_argument("--batch-size", type=int, default=16)
    training.add_argument("--learning-rate", type=float, default=1e-3)
    training.add_argument("--workers", type=int, default=14)
    training.add_argument("--device", default="cuda")
    training.add_argument("--checkpoint-minutes", type=float, default=2.0)
    training.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.collection, args.data_root, args.out)
    else:
        train(args)


if __name__ == "__main__":
    main()
