"""Resumable dataset uploads (`/v1/datasets/uploads`): parts in order, offsets, a dropped connection, the SDK."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi.testclient import TestClient

from ganft.client import Client
from ganft.settings import Settings
from tests.api.conftest import npz_bytes, wait_until

if TYPE_CHECKING:  # TestClient's responses: httpx2's on starlette >= 1.0, httpx's before
    from starlette.testclient import httpx as testclient_httpx


def _files(settings: Settings, upload_id: str) -> list[str]:
    root = settings.data_dir / "store" / "datasets" / upload_id
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _start(client: TestClient | httpx.Client, headers: dict[str, str], data: bytes, **extra: object) -> str:
    response = client.post("/v1/datasets/uploads", headers=headers,
                           json={"name": "big.npz", "size_bytes": len(data), **extra})  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["offset"] == 0 and response.json()["format"] == "npz"
    return str(response.json()["id"])


def test_parts_in_order_then_complete(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    data = npz_bytes(40)
    upload = _start(client, headers, data)
    third = len(data) // 3
    for start in (0, third, 2 * third):
        end = len(data) if start == 2 * third else start + third
        response = client.put(f"/v1/datasets/uploads/{upload}?offset={start}", headers=headers,
                              content=data[start:end])  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["offset"] == end
    assert client.get(f"/v1/datasets/uploads/{upload}", headers=headers).json()["offset"] == len(data)
    assert client.get(f"/v1/datasets/{upload}", headers=headers).status_code == 404  # not a dataset yet
    digest = hashlib.sha256(data).hexdigest()
    response = client.post(f"/v1/datasets/uploads/{upload}/complete", headers=headers, json={"sha256": digest})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] == upload and body["sha256"] == digest and body["size_bytes"] == len(data)
    assert body["stats"]["examples"] == 40 and body["name"] == "big.npz"
    assert client.get(f"/v1/datasets/{upload}", headers=headers).json() == body
    assert _files(settings, upload) == ["data"]  # the parts are gone
    assert client.get(f"/v1/datasets/uploads/{upload}", headers=headers).status_code == 404


def test_offsets_are_enforced(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    data = npz_bytes(12)
    upload = _start(client, headers, data)
    url = f"/v1/datasets/uploads/{upload}"
    wrong = client.put(f"{url}?offset=5", headers=headers, content=data[5:])
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == "0"
    assert client.put(f"{url}?offset=0", headers=headers, content=data[:10]).json()["offset"] == 10
    again = client.put(f"{url}?offset=0", headers=headers, content=data[:10])  # a resend of a part that arrived
    assert again.status_code == 409 and again.headers["upload-offset"] == "10"
    early = client.post(f"{url}/complete", headers=headers)
    assert early.status_code == 409 and early.headers["upload-offset"] == "10"
    past = client.put(f"{url}?offset=10", headers=headers, content=data[10:] + b"extra")
    assert past.status_code == 413
    empty = client.put(f"{url}?offset=10", headers=headers, content=b"")
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "body"
    assert len(_files(settings, upload)) == 1  # only the part that was accepted
    assert client.put(f"{url}?offset=10", headers=headers, content=data[10:]).json()["offset"] == len(data)
    assert client.post(f"{url}/complete", headers=headers).status_code == 201


def test_bad_requests_name_the_field(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str], make_client: Callable[..., TestClient]
) -> None:
    def start(**body: object) -> testclient_httpx.Response:
        return client.post("/v1/datasets/uploads", headers=headers, json=body)

    assert start(name="d", size_bytes=10).json()["errors"][0]["field"] == "format"
    assert start(name="d.npz", size_bytes=0).status_code == 422
    assert start(name="d.npz", size_bytes=10, colour="blue").status_code == 422
    small = make_client(max_upload_bytes=100)
    assert (
        small.post("/v1/datasets/uploads", headers=headers, json={"name": "d.npz", "size_bytes": 101}).status_code
        == 413
    )
    data = npz_bytes(12)
    upload = _start(client, headers, data)
    assert client.get(f"/v1/datasets/uploads/{upload}", headers=other_headers).status_code == 404
    assert client.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=other_headers, content=data).status_code == 404
    assert client.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=headers, content=data).status_code == 200
    bad_sha = client.post(f"/v1/datasets/uploads/{upload}/complete", headers=headers, json={"sha256": "0" * 64})
    assert bad_sha.status_code == 422 and bad_sha.json()["errors"][0]["field"] == "sha256"
    assert client.get(f"/v1/datasets/uploads/{upload}", headers=headers).status_code == 404  # discarded


def test_invalid_dataset_is_refused_at_completion(
    client: TestClient, headers: dict[str, str], settings: Settings
) -> None:
    data = b"PK\x03\x04 not really a zip"
    upload = _start(client, headers, data)
    client.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=headers, content=data)
    response = client.post(f"/v1/datasets/uploads/{upload}/complete", headers=headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"].startswith("file")
    assert _files(settings, upload) == []


def test_abort_removes_the_parts(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    data = npz_bytes(12)
    upload = _start(client, headers, data)
    client.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=headers, content=data[:20])
    assert _files(settings, upload)
    assert client.delete(f"/v1/datasets/uploads/{upload}", headers=headers).status_code == 204
    assert _files(settings, upload) == []
    assert client.delete(f"/v1/datasets/uploads/{upload}", headers=headers).status_code == 404


def test_upload_survives_a_dropped_connection(
    make_live_server: Callable[..., str], headers: dict[str, str], settings: Settings
) -> None:
    """Over a real server: a part whose connection drops mid-body leaves nothing; the offset says where to resume."""
    data = npz_bytes(400)  # ~26 KB
    base = make_live_server()
    with httpx.Client(base_url=base, timeout=30) as http:
        upload = _start(http, headers, data)
        assert http.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=headers,
                        content=data[:10_000]).json()["offset"] == 10_000  # fmt: skip

        def breaks_midway() -> Iterator[bytes]:
            yield data[10_000:15_000]
            raise ConnectionResetError("the network went away")

        with pytest.raises((httpx.TransportError, ConnectionResetError)):
            http.put(f"/v1/datasets/uploads/{upload}?offset=10000", headers={**headers, "Content-Length": "16000"},
                     content=breaks_midway())  # fmt: skip
        wait_until(lambda: len(_files(settings, upload)) == 1, "the broken part's temporary file to go")
        assert http.get(f"/v1/datasets/uploads/{upload}", headers=headers).json()["offset"] == 10_000
        assert http.put(f"/v1/datasets/uploads/{upload}?offset=10000", headers=headers,
                        content=data[10_000:]).json()["offset"] == len(data)  # fmt: skip
        done = http.post(f"/v1/datasets/uploads/{upload}/complete", headers=headers,
                         json={"sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        assert done.status_code == 201, done.text
        assert done.json()["stats"]["examples"] == 400


class _Flaky(httpx.HTTPTransport):
    """Injected failures on the way to a real server: the 1st part never leaves, the 2nd arrives but its
    answer is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            self.puts += 1
            if self.puts == 1:
                raise httpx.WriteError("connection reset before the part was sent")
            if self.puts == 2:
                super().handle_request(request).close()
                raise httpx.ReadError("connection reset before the answer came")
        return super().handle_request(request)


def test_sdk_resumable_upload_carries_on_after_failures(
    make_live_server: Callable[..., str], headers: dict[str, str], tmp_path: Path
) -> None:
    data = npz_bytes(300)
    path = tmp_path / "big.npz"
    path.write_bytes(data)
    key = headers["Authorization"].removeprefix("Bearer ")
    transport = _Flaky()
    started: list[str] = []
    with Client(make_live_server(), key, transport=transport, backoff_s=0.0) as api:
        api.sleep = lambda s: None
        ds = api.upload_dataset_resumable(path, part_bytes=4096, on_started=started.append)
    assert ds.sha256 == hashlib.sha256(data).hexdigest() and ds.stats["examples"] == 300 and ds.id == started[0]
    parts = -(-len(data) // 4096)
    assert transport.puts == parts + 1  # the lost part once more; the arrived one not again


def test_sdk_resumes_an_earlier_upload_by_id(
    make_live_server: Callable[..., str], headers: dict[str, str], tmp_path: Path
) -> None:
    data = npz_bytes(100)
    path = tmp_path / "big.npz"
    path.write_bytes(data)
    base = make_live_server()
    with httpx.Client(base_url=base, timeout=30) as http:
        upload = _start(http, headers, data)
        http.put(f"/v1/datasets/uploads/{upload}?offset=0", headers=headers, content=data[:3000])
    with Client(base, headers["Authorization"].removeprefix("Bearer ")) as api:
        ds = api.upload_dataset_resumable(path, upload_id=upload, part_bytes=1000)
    assert ds.id == upload and ds.sha256 == hashlib.sha256(data).hexdigest()
