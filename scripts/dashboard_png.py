"""Photograph the dashboard's page of a finished job on a running stack (docs/dashboard.png is made so).

    .venv/bin/python scripts/dashboard_png.py --url http://127.0.0.1:8000 --key "$(cat .ganft/admin.key)" \
        --job job_... [--out docs/dashboard.png] [--width 1280]

Headless Chromium (/usr/bin/chromium, or GANFT_TEST_CHROMIUM) driven by Playwright, as the browser
tests drive it: the key is entered once, the job page is opened and photographed in full once its
result table, charts and both pictures (samples.png, curves.png) have loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e_browser.conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402 (the tests' browser settings)

IMAGES_LOADED = """() => ['#samples-img', '#curves-img'].every((s) => {
    const i = document.querySelector(s); return !i || (i.complete && i.naturalWidth > 0); })"""


def photograph(url: str, key: str, job_id: str, out: Path, width: int) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": width, "height": 900}, color_scheme="light",
        )  # fmt: skip
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{url}/")
        page.fill("#key-prompt-input", key)
        page.click("#key-prompt button[type=submit]")
        page.goto(f"{url}/#/jobs/{job_id}")
        page.wait_for_selector(".job-head .badge")
        page.wait_for_selector("#result-table")
        page.wait_for_selector("#charts svg path.series")
        page.wait_for_selector("#curves-img")
        page.wait_for_function(IMAGES_LOADED)
        page.wait_for_selector(".live:has-text('ended')")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(out), full_page=True)
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default=os.environ.get("GANFT_API_KEY"), help="default: $GANFT_API_KEY")
    parser.add_argument("--job", required=True, help="a finished job's id")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    args = parser.parse_args()
    if not args.key:
        parser.error("--key (or GANFT_API_KEY) is needed")
    photograph(args.url.rstrip("/"), args.key, args.job, args.out, args.width)
    sys.stderr.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
