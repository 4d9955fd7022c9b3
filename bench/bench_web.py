"""The web page's figures, measured in Debian's chromium driven by Playwright (issue goals: first
view within 2 s, click-to-shown p95 within 0.5 s on a hippocampus case, server under 1.5 GB with a
512x512x300 CT).

    .venv/bin/python bench/bench_web.py --interactive MODEL.pt --automatic MODEL.pt \\
        --dataset ../shared/data/hippocampus/dataset.json --ct ../shared/data/totalseg-example/example_ct_sm.nii.gz

1. page load to first rendered slice view (seconds; 3 fresh pages);
2. Segment on a held-out hippocampus case (button to segments listed, seconds);
3. click to shown: for each object of a few held-out cases, the views are centred on the object's
   interior-most voxel and the centre of a slice view is clicked; the time from the mouse click
   to the page's answer (the click's time shown) and to the next frame of that view (the segment
   drawn);
4. server RSS (MB, the server and its children) with the CT resampled to 512x512x300 loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "web"))

from test_web_page import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEW,
    WebServer,
    choose_model,
    click_mode,
    go_to,
    open_panel,
    ras_of,
    segment_voxels,
    upload,
    wait_for,
)

from AttentionSegLib.data.dataset import load_dataset  # noqa: E402
from AttentionSegLib.inference.model_file import load_model_file  # noqa: E402
from AttentionSegLib.interactive.robot import interior_point  # noqa: E402
from AttentionSegLib.io.image import read_image  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(child) for child in children)
        except FileNotFoundError:
            continue
    return total / 1024


def ct_512(ct_path: Path, out: Path) -> Path:
    """The CT resampled (linear) onto 512x512x300 voxels over its own extent."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(ct_path))
    size = [512, 512, 300]
    spacing = [sp * n / m for sp, n, m in zip(image.GetSpacing(), image.GetSize(), size)]
    resampled = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing, image.GetDirection(), -1024,
        sitk.sitkInt16,
    )  # fmt: skip
    sitk.WriteImage(resampled, str(out), useCompression=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactive", type=Path, required=True, help="an interactive hippocampus model file")
    parser.add_argument("--automatic", type=Path, required=True, help="an automatic hippocampus model file")
    parser.add_argument("--dataset", type=Path, required=True, help="hippocampus dataset.json")
    parser.add_argument("--ct", type=Path, required=True, help="a CT volume, resampled to 512x512x300")
    parser.add_argument("--cases", type=int, default=5, help="held-out cases for the clicks (default 5)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="attentionseg-bench-web-"))
    models = folder / "models"
    models.mkdir()
    shutil.copy(args.automatic, models / "automatic.pt")
    shutil.copy(args.interactive, models / "clicks.pt")
    definition = load_dataset(args.dataset)
    held_out = load_model_file(args.interactive).training["val_cases"]  # the model's validation cases
    cases = [definition.case(case_id) for case_id in held_out[: args.cases]]
    server = WebServer(folder, models, max_upload_mb=2048)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            loads = []
            for _ in range(3):
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                started = time.perf_counter()
                page.goto(server.url)
                page.wait_for_selector(VIEW, state="visible", timeout=60000)
                loads.append(time.perf_counter() - started)
                page.close()
            print(
                f"page load to first rendered view: {', '.join(f'{s:.2f}' for s in loads)} s "
                f"(median {np.median(loads):.2f} s)"
            )

            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector(VIEW, state="visible", timeout=60000)
            upload(page, ".as-upload-volume", cases[0].images[0])
            page.wait_for_selector(f".as-volume-name:has-text('{cases[0].case_id}')", timeout=60000)
            started = time.perf_counter()
            page.locator(".as-segment").click()
            wait_for(lambda: len(segment_voxels(page)) >= 2 and all(segment_voxels(page).values()), 300, "Segment")
            print(
                f"Segment (automatic model, {cases[0].case_id}): "
                f"{time.perf_counter() - started:.2f} s button to segments listed"
            )

            choose_model(page, "clicks")
            open_panel(page, "Click to segment")
            click_mode(page, "positive")
            to_state, to_frame, server_s = [], [], []
            for case in cases:
                upload(page, ".as-upload-volume", case.images[0])
                page.wait_for_selector(f".as-volume-name:has-text('{case.case_id}')", timeout=60000)
                image, reference = read_image(case.images[0]), read_image(case.label).array
                for value in (1, 2):
                    page.locator("button:has-text('New object')").click()
                    go_to(page, ras_of(image, interior_point(reference == value, image.spacing_array_order)))
                    time.sleep(0.5)
                    before_text = page.locator(".as-last-click").inner_text()
                    view = page.locator(VIEW).first
                    before_src = view.get_attribute("src")
                    box = view.bounding_box()
                    started = time.perf_counter()
                    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                    # Polled on every animation frame: the measure is not rounded up to a sleep.
                    page.wait_for_function(
                        "previous => document.querySelector('.as-last-click').innerText !== previous",
                        arg=before_text, polling="raf", timeout=30000,
                    )  # fmt: skip
                    to_state.append(time.perf_counter() - started)
                    page.wait_for_function(
                        "previous => document.querySelector('img.image-display-area').src !== previous",
                        arg=before_src, polling="raf", timeout=30000,
                    )  # fmt: skip
                    to_frame.append(time.perf_counter() - started)
                    server_s.append(page.locator(".as-last-click").inner_text())
            for name, values in (("the page's answer", to_state), ("the next view frame", to_frame)):
                print(
                    f"click to {name} ({len(values)} clicks): p50 {np.percentile(values, 50):.3f} s, "
                    f"p95 {np.percentile(values, 95):.3f} s"
                )
            print("per click (page answer s, server's own time):", [f"{a:.2f}" for a in to_state], server_s)
            browser.close()
    finally:
        server.stop()

    ct = ct_512(args.ct, folder / "ct512.nii.gz")
    (folder / "ct").mkdir()
    empty = WebServer(folder / "ct", models)
    empty_rss = rss_mb(empty.process.pid)
    empty.stop()
    loaded = WebServer(folder / "ct", models, images=[ct])
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(loaded.url)
            page.wait_for_selector(VIEW, state="visible", timeout=120000)
            time.sleep(3)
            print(
                f"server RSS: {empty_rss:.0f} MB empty, {rss_mb(loaded.process.pid):.0f} MB with a 512x512x300 CT shown"
            )
            browser.close()
    finally:
        loaded.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ATTENTIONSEG_CACHE_DIR", tempfile.mkdtemp(prefix="attentionseg-cache-"))
    sys.exit(main())
