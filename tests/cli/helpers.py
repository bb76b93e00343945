"""Run the real `ganft` CLI as a subprocess (python -m ganft.cli) against a server URL and key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.worker.helpers import ROOT


@dataclass
class Ganft:
    url: str
    key: str

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANFT_")}
        env |= {"GANFT_URL": self.url, "GANFT_API_KEY": self.key}
        return subprocess.run(
            [sys.executable, "-m", "ganft.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def ok(self, *args: str, timeout: float = 120) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"ganft {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))
