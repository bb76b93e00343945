"""`/v1/datasets`: streamed uploads validated by the inspector subprocess, list, read, delete."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from ganft.db.session import session_scope
from ganft.db.tables import Dataset
from ganft.retention import collect
from ganft.settings import Settings
from ganft.store import open_store
from tests.api.conftest import Seed, csv_bytes, npz_bytes


def _dataset_rows(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def _stored_files(settings: Settings) -> list[str]:
    root = settings.data_dir / "store" / "datasets"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_multipart_npz_upload(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """Multipart `file` + `name`: 201 with size, sha256 and the inspector's stats; then GET and list show it."""
    data = npz_bytes(12)
    response = client.post("/v1/datasets", headers=headers, files={"file": ("d.npz", data)}, data={"name": "digits"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "digits" and body["format"] == "npz" and body["status"] == "ready"
    assert body["size_bytes"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["stats"]["examples"] == 12 and body["stats"]["labeled"] == 6 and body["stats"]["unlabeled"] == 6
    assert body["stats"]["layout"] == {"kind": "image", "channels": 1, "height": 8, "width": 8}
    assert client.get(f"/v1/datasets/{body['id']}", headers=headers).json() == body
    assert [d["id"] for d in client.get("/v1/datasets", headers=headers).json()["data"]] == [body["id"]]
    assert _stored_files(settings) == [f"{body['id']}/data"]


def test_raw_body_csv_upload(client: TestClient, headers: dict[str, str]) -> None:
    """The raw body with `?name=&format=`: the csv's label column gives classes; an empty label is unlabeled."""
    response = client.post("/v1/datasets?name=animals&format=csv", headers=headers, content=csv_bytes())
    assert response.status_code == 201, response.text
    stats = response.json()["stats"]
    assert stats["classes"] == ["cat", "dog"] and stats["class_counts"] == {"cat": 2, "dog": 1}
    assert stats["unlabeled"] == 1 and stats["layout"] == {"kind": "features", "features": 2}


def test_chunked_upload_without_content_length(client: TestClient, headers: dict[str, str]) -> None:
    """A chunked raw body (no Content-Length) streams in; the format comes from the name's extension."""

    def chunks() -> Iterator[bytes]:
        data = csv_bytes()
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    response = client.post("/v1/datasets?name=pets.csv", headers=headers, content=chunks())
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "csv"


def test_invalid_dataset_is_422_and_leaves_nothing(
    client: TestClient, headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """A csv without a label column: 422 with the loader's message; neither the row nor the file remain."""
    response = client.post(
        "/v1/datasets", headers=headers, files={"file": ("bad.csv", b"a,b\n1,2\n")}, data={"format": "csv"}
    )
    assert response.status_code == 422
    problem = response.json()
    assert "label" in problem["detail"] and problem["errors"][0]["field"] == "file"
    assert _dataset_rows(engine) == 0 and _stored_files(settings) == []


def test_format_errors(client: TestClient, headers: dict[str, str], engine: Engine) -> None:
    """No format and no telling extension, an unknown format, a missing `file` part, an unknown part: all 422."""
    cases = [
        ({"files": {"file": ("data.bin", csv_bytes())}}, "format"),
        ({"files": {"file": ("d.csv", csv_bytes())}, "data": {"format": "parquet"}}, "format"),
        ({"data": {"name": "x"}, "files": {"other": ("x.csv", b"1")}}, "other"),
        ({"files": {"files": ("d.csv", csv_bytes())}}, "files"),
    ]
    for kwargs, field in cases:
        response = client.post("/v1/datasets", headers=headers, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 422, (kwargs, response.text)
        assert response.json()["errors"][0]["field"] == field
    response = client.post("/v1/datasets?format=hdf5", headers=headers, content=b"x")
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "format"
    assert _dataset_rows(engine) == 0


def test_oversize_upload_is_413(
    make_client: Callable[..., TestClient], headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    """max 100 bytes: a declared Content-Length, a chunked raw body and a multipart body over it are all 413."""
    client = make_client(max_upload_bytes=100)
    big = b"f1,label\n" + b"1.0,a\n" * 50

    declared = client.post("/v1/datasets?name=x.csv", headers=headers, content=big)
    assert declared.status_code == 413 and "100 bytes" in declared.json()["detail"]

    chunked = client.post("/v1/datasets?name=x.csv", headers=headers, content=iter([big[:60], big[60:]]))
    assert chunked.status_code == 413

    def multipart_chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
        for _ in range(10):
            yield b"1.0,a\n" * 5
        yield b"\r\n--b--\r\n"

    multipart = client.post(
        "/v1/datasets",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        content=multipart_chunks(),
    )
    assert multipart.status_code == 413
    assert _dataset_rows(engine) == 0 and _stored_files(settings) == []


def test_malformed_multipart(client: TestClient, headers: dict[str, str], engine: Engine) -> None:
    """A multipart body cut before its closing boundary, or without a boundary, is a 400 and leaves nothing."""
    truncated = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\nf,label\n1,a\n'
    response = client.post(
        "/v1/datasets", headers={**headers, "Content-Type": "multipart/form-data; boundary=b"}, content=truncated
    )
    assert response.status_code == 400
    response = client.post("/v1/datasets", headers={**headers, "Content-Type": "multipart/form-data"}, content=b"x")
    assert response.status_code == 400
    assert _dataset_rows(engine) == 0


def test_list_pagination_has_no_duplicates(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """7 datasets in pages of 3: newest first, every one exactly once, `next_cursor` null at the end.

    Uploading rows (status `uploading`) and other tenants' rows never appear.
    """
    ids = [seed.dataset("acme") for _ in range(7)]
    for age, dataset_id in enumerate(reversed(ids)):
        seed.age(Dataset, dataset_id, age)  # ids[-1] newest
    seed.dataset("acme", status="uploading")
    seed.dataset("globex")
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 3, **({"after": cursor} if cursor else {})}
        page = client.get("/v1/datasets", headers=headers, params=params).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = client.get("/v1/datasets", headers=headers, params={"after": "garbage!"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "after"


def test_delete(client: TestClient, headers: dict[str, str], seed: Seed, settings: Settings) -> None:
    """204, then 404 on read and delete; the file goes at once, or (used by a queued job) once the job
    finishes, by the garbage collector; the finished job still shows the dataset id."""
    store = open_store(settings.store_url)
    free = seed.dataset("acme")
    store.put_bytes(f"datasets/{free}/data", b"x")
    assert client.delete(f"/v1/datasets/{free}", headers=headers).status_code == 204
    assert client.get(f"/v1/datasets/{free}", headers=headers).status_code == 404
    assert client.delete(f"/v1/datasets/{free}", headers=headers).status_code == 404
    assert not store.exists(f"datasets/{free}/data")

    busy = seed.dataset("acme")
    store.put_bytes(f"datasets/{busy}/data", b"y")
    job = seed.job("acme", dataset_id=busy)
    assert client.delete(f"/v1/datasets/{busy}", headers=headers).status_code == 204
    assert client.get(f"/v1/datasets/{busy}", headers=headers).status_code == 404
    assert store.exists(f"datasets/{busy}/data")  # the queued job still reads it
    later = time.time() + 2 * settings.gc_grace_s
    collect(settings, now=later)
    assert store.exists(f"datasets/{busy}/data")
    seed.finish(job, "failed")
    collect(settings, now=later)
    assert not store.exists(f"datasets/{busy}/data")
    assert client.get(f"/v1/jobs/{job}", headers=headers).json()["dataset_id"] == busy


def test_unknown_dataset_is_404(client: TestClient, headers: dict[str, str]) -> None:
    """An id that never existed: 404 problem on read and delete."""
    for method in ("GET", "DELETE"):
        response = client.request(method, "/v1/datasets/ds_0123456789abcdef01234567", headers=headers)
        assert response.status_code == 404 and response.json()["title"] == "Not Found"


def test_oversize_upload_over_a_real_server(make_live_server: Callable[..., str], headers: dict[str, str]) -> None:
    """Through uvicorn with a 1000-byte limit, 5 MB with Content-Length and 5 MB chunked both get the 413
    answer (the server stops reading; the client still sees the problem document)."""
    url = make_live_server(max_upload_bytes=1000) + "/v1/datasets?name=x.csv"
    declared = httpx.post(url, headers=headers, content=b"x" * 5_000_000, timeout=30)
    chunked = httpx.post(url, headers=headers, content=iter([b"x" * 65536] * 80), timeout=30)
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["status"] == 413


def test_a_name_with_nul_is_a_422(client: TestClient, headers: dict[str, str]) -> None:
    """Postgres text cannot hold NUL: a 422 on `name` (query or multipart), not a 500 (found by the fuzz test)."""
    params = {"name": "a\x00b", "format": "csv"}
    query = client.post("/v1/datasets", headers=headers, params=params, content=csv_bytes())
    multipart = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.csv", csv_bytes())}, data={"name": "a\x00b"}
    )
    for response in (query, multipart):
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "name", response.text
