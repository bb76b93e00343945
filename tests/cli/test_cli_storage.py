"""`ganft usage`, `ganft models delete` (against a real uvicorn server) and `ganft admin gc` (on the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganft.db.tables import new_id
from ganft.settings import Settings
from ganft.store import open_store
from tests.api.conftest import safetensors_bytes
from tests.api.test_models import CLASSIFIER
from tests.cli.helpers import Ganft
from tests.sdk.test_client import tiny_npz
from tests.worker.helpers import ROOT


@pytest.fixture
def ganft(live_server: str, api_key: str) -> Ganft:
    return Ganft(live_server, api_key)


def test_usage_and_models_delete(ganft: Ganft, tmp_path: Path) -> None:
    dataset = ganft.json("datasets", "upload", str(tiny_npz(tmp_path / "d.npz")))
    usage = ganft.json("usage")
    assert usage["by_kind"]["datasets"] == dataset["size_bytes"] == usage["total_bytes"]
    assert usage["max_storage_bytes"] is None
    lines = ganft.ok("usage").splitlines()
    assert lines[0].split()[:2] == ["datasets", f"{dataset['size_bytes']:,}"]
    assert lines[-1].split() == ["quota", "none"]

    (tmp_path / "m.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "m.json").write_text(json.dumps(CLASSIFIER))
    model = ganft.json("models", "upload", "--weights", str(tmp_path / "m.safetensors"), "--config",
                       str(tmp_path / "m.json"))  # fmt: skip
    assert ganft.json("models", "delete", model["id"]) == {"id": model["id"], "deleted": True}
    missing = ganft.run("models", "show", model["id"])
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


def _admin_gc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "ganft.cli", "admin", "gc", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_admin_gc_dry_run_then_for_real(ganft_env: dict[str, str], settings: Settings) -> None:
    """An orphan folder past the grace period: listed by --dry-run and kept, then deleted; a second pass
    deletes nothing."""
    store = open_store(settings.store_url)
    key = f"datasets/{new_id('ds')}/data"
    store.put_bytes(key, b"orphan")
    old = time.time() - 2 * settings.gc_grace_s
    os.utime(store.local_path(key), (old, old))
    os.utime(store.local_path(key).parent, (old, old))
    folder = key.rsplit("/", 1)[0]
    dry = _admin_gc(ganft_env, "--dry-run")
    assert dry.stdout.splitlines() == [folder] and "would delete 1" in dry.stderr
    assert store.exists(key)
    done = _admin_gc(ganft_env)
    assert done.stdout.splitlines() == [folder] and not store.exists(key)
    again = json.loads(_admin_gc(ganft_env, "--json").stdout)
    assert again["deleted"] == [] and again["dry_run"] is False
