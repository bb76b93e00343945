"""The API process is SIGKILLed in the middle of a dataset upload and of a model upload."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Dataset, Model, utcnow
from ganft.settings import Settings
from tests.api.conftest import safetensors_bytes
from tests.reliability.conftest import Processes
from tests.worker.helpers import wait_for

DECLARED = 8 * 1024 * 1024  # the body the client announces; it sends only part of it
CHUNK = 256 * 1024


def _uploading(engine: Engine) -> list[Dataset]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Dataset).where(Dataset.status == "uploading")))


def test_api_killed_mid_upload_leaves_no_half_dataset(
    engine: Engine, rel_settings: Settings, processes: Processes, make_key: Callable[[str], str]
) -> None:
    """Tried: a slow client streams a raw 8 MiB body in 256 KiB chunks; the API is SIGKILLed after
    ~1 MiB arrived. Expect after a restart: the dataset is not listed and its id is a 404, its row
    and its partial file are gone (removed at start as a dead upload)."""
    auth = {"Authorization": f"Bearer {make_key('acme')}"}
    # Uploads older than 1 s count as dead: this test's restart comes seconds later.
    api = processes.start_api(GANFT_STALE_UPLOAD_S="1")
    head = (
        f"POST /v1/datasets?name=big.npz&format=npz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {auth['Authorization']}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {DECLARED}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as client:
        client.sendall(head)
        for _ in range(4):
            client.sendall(b"\0" * CHUNK)
        rows = wait_for(lambda: _uploading(engine), timeout=20, what="the upload's row", logs=processes.logs)
        dataset_id = rows[0].id
        folder = rel_settings.data_dir.resolve() / "store" / "datasets" / dataset_id
        wait_for(lambda: any(folder.glob(".data.tmp-*")), timeout=20, what="the partial file", logs=processes.logs)
        api.kill()
    assert _uploading(engine) and any(folder.iterdir())  # what the crash left behind

    # "Dead" = started more than 1 s ago (GANFT_STALE_UPLOAD_S): wait until that is true, then restart.
    created = rows[0].created_at if rows[0].created_at.tzinfo else rows[0].created_at.replace(tzinfo=dt.UTC)
    wait_for(lambda: utcnow() - created > dt.timedelta(seconds=1.5), timeout=10, what="the upload to age")
    api = processes.start_api(port=api.port, GANFT_STALE_UPLOAD_S="1")
    listed = httpx.get(f"{api.url}/v1/datasets", headers=auth, timeout=10)
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert httpx.get(f"{api.url}/v1/datasets/{dataset_id}", headers=auth, timeout=10).status_code == 404
    assert _uploading(engine) == []
    assert not folder.exists()
    assert f"removed 1 upload(s) that never finished: {dataset_id}" in processes.logs()


CLASSIFIER = {
    "architecture": "mlp",
    "arguments": {"in_features": 3, "num_classes": 2},
    "class_names": ["cat", "dog"],
    "input_layout": {"kind": "features", "features": 3},
}
BOUNDARY = "ganft-crash-test"


def _part_head(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def _part(name: str, payload: bytes, filename: str | None = None) -> bytes:
    return _part_head(name, filename) + payload + b"\r\n"


def _models(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Model.id)))


def _newest_mtime(folder: Path) -> float:
    return max(path.stat().st_mtime for path in (folder, *folder.iterdir()))


def test_api_killed_mid_model_upload_leaves_no_half_model(
    engine: Engine, rel_settings: Settings, processes: Processes, make_key: Callable[[str], str]
) -> None:
    """Tried: a finished model upload, then a slow multipart upload (config, a whole `weights` part,
    then a `discriminator` part of a declared 8 MiB body cut off after 1 MiB); the API is SIGKILLed
    mid-body. Expect: no model row for it at any time (nothing to list or fetch); after a restart
    (dead = nothing written for GANFT_STALE_UPLOAD_S) its `models/{id}/` folder and temp files are
    gone, the finished model and its files are untouched."""
    auth = {"Authorization": f"Bearer {make_key('acme')}"}
    api = processes.start_api(GANFT_STALE_UPLOAD_S="1")
    done = httpx.post(f"{api.url}/v1/models", headers=auth, timeout=30,
                      files={"weights": ("ok.safetensors", safetensors_bytes())},
                      data={"config": json.dumps(CLASSIFIER)})  # fmt: skip
    assert done.status_code == 201, done.text
    kept = done.json()["id"]
    models_root = rel_settings.data_dir.resolve() / "store" / "models"

    head = (
        f"POST /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {DECLARED}\r\n\r\n"
    ).encode()
    opening = (
        _part("config", json.dumps({**CLASSIFIER, "role": "generator",
                                    "discriminator": {"architecture": "mlp", "arguments": {}}}).encode())
        + _part("weights", safetensors_bytes(), "g.safetensors")
        + _part_head("discriminator", "d.safetensors")
    )  # fmt: skip

    def partial_folder() -> Path | None:
        folders = [f for f in models_root.iterdir() if f.name != kept] if models_root.is_dir() else []
        return folders[0] if folders and any(folders[0].glob(".discriminator.safetensors.tmp-*")) else None

    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as client:
        client.sendall(head + opening)
        for _ in range(4):
            client.sendall(b"\0" * CHUNK)
        folder = wait_for(partial_folder, timeout=20, what="the upload's files", logs=processes.logs)
        api.kill()
    model_id = folder.name
    left = sorted(p.name for p in folder.iterdir())
    assert any(n.startswith(".model.safetensors.tmp-") for n in left), left  # the whole part, never committed
    assert any(n.startswith(".discriminator.safetensors.tmp-") for n in left), left  # the cut-off part
    assert _models(engine) == [kept]  # no row for the half model: nothing to list or fetch

    # "Dead" = nothing written for 1 s (GANFT_STALE_UPLOAD_S): wait until that is true, then restart.
    wait_for(lambda: time.time() - _newest_mtime(folder) > 1.5, timeout=10, what="the files to age")
    api = processes.start_api(port=api.port, GANFT_STALE_UPLOAD_S="1")
    listed = httpx.get(f"{api.url}/v1/models", headers=auth, timeout=10)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == [kept]
    assert httpx.get(f"{api.url}/v1/models/{model_id}", headers=auth, timeout=10).status_code == 404
    assert not folder.exists()
    assert f"removed 1 model upload(s) that never finished: {model_id}" in processes.logs()
    assert sorted(p.name for p in (models_root / kept).iterdir()) == ["model.json", "model.safetensors"]
    weights = httpx.get(f"{api.url}/v1/models/{kept}/weights", headers=auth, timeout=10)
    assert weights.status_code == 200 and weights.content == safetensors_bytes()
