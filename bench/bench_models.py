"""Benchmark: forward and forward+backward time and peak memory of every network at its default patch.

Each network runs in its own child process (so peak memory is its own) at its default
configuration (``attentionseg models``: the paper's channels and classes, native dimensionality,
default patch size), batch 1:

- forward: ``eval()`` under ``torch.inference_mode()``, median of ``--repeats`` after one warm-up;
- forward+backward: ``train()``, loss = mean of the squared logits (every output when the network
  has deep supervision, which is switched on where the network offers it), median of ``--repeats``;
- peak memory: on CPU the child's peak resident set size minus its size before building the network
  (``ru_maxrss``, MiB); on CUDA ``torch.cuda.max_memory_allocated`` (MiB). CUDA runs use bfloat16
  autocast, as training and inference do there.

Run from the repository root:
    .venv/bin/python bench/bench_models.py [--device cpu|cuda] [--models NAME ...] [--repeats N] [--write-results]
``--write-results`` replaces this device's section in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "AttentionSeg"))


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(name: str, device: str, repeats: int) -> dict:
    import torch

    from AttentionSegLib.models import build_model, get_model_info

    info = get_model_info(name)
    config = info.default_config
    dims = config["spatial_dims"]
    patch = info.default_patch_size[dims]
    options = {"deep_supervision": True} if info.deep_supervision else {}
    clinical = 8 if info.clinical_input else 0
    torch.manual_seed(0)
    rss_before = _rss_mib()
    network = build_model(
        name, dims, config["in_channels"], config["out_channels"], patch, clinical_features=clinical, **options
    ).to(device)
    x = torch.randn(1, config["in_channels"], *patch, device=device)
    arguments = (x, torch.randn(1, clinical, device=device)) if clinical else (x,)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward():
        with torch.inference_mode(), autocast:
            network(*arguments)
        synchronize()

    def forward_backward():
        with autocast:
            outputs = network(*arguments)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        sum(output.float().square().mean() for output in outputs).backward()
        network.zero_grad(set_to_none=True)
        synchronize()

    timings = {}
    for label, mode, step in (("forward_s", False, forward), ("forward_backward_s", True, forward_backward)):
        network.train(mode)
        step()  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
        timings[label] = statistics.median(seconds)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    return {
        "name": name,
        "spatial_dims": dims,
        "patch": list(patch),
        "in_channels": config["in_channels"],
        "out_channels": config["out_channels"],
        "parameters": sum(p.numel() for p in network.parameters()),
        "peak_mib": peak,
        **timings,
    }


def device_description(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}"
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as cpuinfo:
        match = re.search(r"model name\s*:\s*(.*)", cpuinfo.read())
    if match:
        cpu = match.group(1).strip()
    return f"CPU: {cpu}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()}); torch {torch.__version__}"


def markdown(results: list[dict], device: str, description: str, repeats: int) -> str:
    lines = [
        f"## Model zoo: forward and forward+backward at the default patch ({device})",
        "",
        "`bench/bench_models.py`: one child process per network, batch 1, default configuration "
        f"(`attentionseg models`), median of {repeats} after a warm-up; deep supervision on where offered; "
        "peak memory = peak RSS increase of the child (CPU) or `max_memory_allocated` (CUDA).",
        "",
        "```",
        f".venv/bin/python bench/bench_models.py --device {device} --repeats {repeats} --write-results",
        description,
        "```",
        "",
        "| network | dims | patch | in -> classes | parameters | forward s | forward+backward s | peak MiB |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | | | | | failed: {r['error']} | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['spatial_dims']} | {'x'.join(map(str, r['patch']))} | "
            f"{r['in_channels']} -> {r['out_channels']} | {r['parameters'] / 1e6:.2f} M | {r['forward_s']:.3f} | "
            f"{r['forward_backward_s']:.3f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(section: str, device: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    heading = f"## Model zoo: forward and forward+backward at the default patch ({device})"
    pattern = re.compile(re.escape(heading) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(section.rstrip("\n"), text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", nargs="*", help="networks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true", help="replace this device's section in RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.device, args.repeats)))
        return 0

    from AttentionSegLib.models import list_models

    results = []
    for name in args.models or list_models():
        command = [sys.executable, __file__, "--child", name, "--device", args.device, "--repeats", str(args.repeats)]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            error = (child.stderr.strip().splitlines() or ["no output"])[-1]
            results.append({"name": name, "error": error})
        else:
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    section = markdown(results, args.device, device_description(args.device), args.repeats)
    print(section)
    if args.write_results:
        write_section(section, args.device)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
