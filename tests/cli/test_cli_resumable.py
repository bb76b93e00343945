"""`ganft datasets upload` in resumable parts, and `--resume` of an interrupted upload, against a real server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from tests.api.conftest import npz_bytes
from tests.cli.helpers import Ganft


def test_upload_in_parts_and_resume(live_server: str, api_key: str, tmp_path: Path) -> None:
    ganft = Ganft(live_server, api_key)
    data = npz_bytes(50)
    path = tmp_path / "big.npz"
    path.write_bytes(data)
    done = ganft.run("datasets", "upload", str(path), "--resumable-above-mib", "0", "--json")
    assert done.returncode == 0, done.stderr
    assert "carry on with --resume ds_" in done.stderr
    assert '"sha256": "' + hashlib.sha256(data).hexdigest() in done.stdout

    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=live_server, headers=headers, timeout=30) as http:  # an upload that stopped halfway
        upload = http.post("/v1/datasets/uploads", json={"name": "big.npz", "size_bytes": len(data)}).json()["id"]
        http.put(f"/v1/datasets/uploads/{upload}", params={"offset": 0}, content=data[:1000])
    resumed = ganft.json("datasets", "upload", str(path), "--resume", upload)
    assert resumed["id"] == upload and resumed["sha256"] == hashlib.sha256(data).hexdigest()
    bad = ganft.run("datasets", "upload", str(path), "--part-mib", "0")
    assert bad.returncode == 2 and "--part-mib" in bad.stderr
