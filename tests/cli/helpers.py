"""Run the real `ganft` CLI as a subprocess (python -m ganft.cli) against a server URL and key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.worker.helpers import ROOT

# What logging.basicConfig writes ("INFO httpx: HTTP Request: ..."), or httpx's request line in any format.
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING) [\w.]+: |HTTP Request: ")


@dataclass
class Ganft:
    url: str
    key: str

    def run(self, *args: str, timeout: float = 120, check_logs: bool = True) -> subprocess.CompletedProcess[str]:
        """`ganft ARGS`; at the default verbosity no log line may reach stdout or stderr (`check_logs`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GANFT_")}
        env |= {"GANFT_URL": self.url, "GANFT_API_KEY": self.key}
        done = subprocess.run(
            [sys.executable, "-m", "ganft.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check_logs:
            logged = [line for line in (done.stdout + done.stderr).splitlines() if LOG_LINE.search(line)]
            assert not logged, f"ganft {' '.join(args)} logged at the default verbosity:\n" + "\n".join(logged)
        return done

    def ok(self, *args: str, timeout: float = 120) -> str:
        done = self.run(*args, timeout=timeout)
        assert done.returncode == 0, f"ganft {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))
