"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real uvicorn server.

    chromium   the browser's path; the tests that need it skip when it is missing (`.ci/run` installs it)
    browser    a Playwright page in a fresh profile, with the console errors it logged (`.errors`)
    stack      tests/e2e's real service: uvicorn + a Celery worker as processes, Postgres, Redis

Playwright never downloads a browser here: it launches the system Chromium by path.
Set GANFT_TEST_CHROMIUM to use another binary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import stack, stack_env  # noqa: F401 (the fixtures, shared with the end-to-end tests)

if TYPE_CHECKING:  # imported lazily, like the browser itself
    from playwright.sync_api import ConsoleMessage, Page

CHROMIUM = os.environ.get("GANFT_TEST_CHROMIUM", "/usr/bin/chromium")
# Quiet, self-contained Chromium: no GPU, no QUIC, no background fetches or updates.
# (Playwright adds --headless, and --user-data-dir for the fresh profile folder it is given.)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Browser:
    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.fixture
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: install Debian's `chromium` (.ci/run does) to run the browser tests")
    return CHROMIUM


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
            color_scheme="light",
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            watched = Browser(page)

            def console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    watched.errors.append(message.text)

            def uncaught(error: Exception) -> None:
                watched.errors.append(f"uncaught: {error}")

            page.on("console", console)
            page.on("pageerror", uncaught)
            yield watched
        finally:
            context.close()
