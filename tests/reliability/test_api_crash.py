"""The API process is SIGKILLed in the middle of a dataset upload."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
from sqlalchemy import Engine, select

from ganft.db.session import session_scope
from ganft.db.tables import Dataset
from ganft.settings import Settings
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

    api = processes.start_api(port=api.port, GANFT_STALE_UPLOAD_S="1")
    listed = httpx.get(f"{api.url}/v1/datasets", headers=auth, timeout=10)
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert httpx.get(f"{api.url}/v1/datasets/{dataset_id}", headers=auth, timeout=10).status_code == 404
    assert _uploading(engine) == []
    assert not folder.exists()
    assert f"removed 1 upload(s) that never finished: {dataset_id}" in processes.logs()
