"""Metric history, artifact listing and downloads (ETag, 304, Range, 416, names)."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.api.conftest import Seed

DATA = bytes(range(256)) * 4  # 1024 bytes


def test_metrics_history(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """(step, name, value) in write order; `?name=` filters; `limit` + next_cursor page through."""
    job = seed.job(status="running")
    for step in (10, 20, 30):
        seed.metric(job, step, "loss_d", 1.0 / step)
        seed.metric(job, step, "accuracy", step / 100)
    body = client.get(f"/v1/jobs/{job}/metrics", headers=headers).json()
    assert [(m["step"], m["name"]) for m in body["data"]][:3] == [(10, "loss_d"), (10, "accuracy"), (20, "loss_d")]
    assert body["next_cursor"] is None
    accuracy = client.get(f"/v1/jobs/{job}/metrics", headers=headers, params={"name": "accuracy"}).json()["data"]
    assert [m["value"] for m in accuracy] == [0.1, 0.2, 0.3]
    first = client.get(f"/v1/jobs/{job}/metrics", headers=headers, params={"limit": 4}).json()
    rest = client.get(f"/v1/jobs/{job}/metrics", headers=headers, params={"after": first["next_cursor"]}).json()
    assert len(first["data"]) == 4 and len(rest["data"]) == 2 and rest["next_cursor"] is None
    bad = client.get(f"/v1/jobs/{job}/metrics", headers=headers, params={"after": "x"})
    assert bad.status_code == 422


def test_artifact_list_and_download(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """The list is a bare array; a download has the quoted sha256 as ETag, its content type and length."""
    job = seed.job(status="succeeded")
    sha = seed.artifact(job, "model.safetensors", DATA)
    seed.artifact(job, "metrics.json", b'{"accuracy": 0.9}', "application/json")
    listing = client.get(f"/v1/jobs/{job}/artifacts", headers=headers).json()
    assert listing == [
        {"name": "metrics.json", "size_bytes": 17, "sha256": hashlib.sha256(b'{"accuracy": 0.9}').hexdigest(),
         "content_type": "application/json"},
        {"name": "model.safetensors", "size_bytes": 1024, "sha256": sha, "content_type": "application/octet-stream"},
    ]  # fmt: skip
    response = client.get(f"/v1/jobs/{job}/artifacts/model.safetensors", headers=headers)
    assert response.status_code == 200 and response.content == DATA
    assert response.headers["etag"] == f'"{sha}"' and response.headers["content-length"] == "1024"
    assert response.headers["accept-ranges"] == "bytes"
    metrics = client.get(f"/v1/jobs/{job}/artifacts/metrics.json", headers=headers)
    assert metrics.headers["content-type"].startswith("application/json") and metrics.json() == {"accuracy": 0.9}


def test_conditional_and_range_requests(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """If-None-Match -> 304; Range a-b, a-, -n -> 206 with Content-Range; past the end -> 416;
    If-Range with an old ETag -> the whole file; several ranges -> the whole file."""
    job = seed.job(status="succeeded")
    sha = seed.artifact(job, "samples.png", DATA, "image/png")
    url = f"/v1/jobs/{job}/artifacts/samples.png"

    def get(**extra: str):  # type: ignore[no-untyped-def]
        return client.get(url, headers={**headers, **extra})

    assert get(**{"If-None-Match": f'"{sha}"'}).status_code == 304
    assert get(**{"If-None-Match": '"other", W/"' + sha + '"'}).status_code == 304
    assert get(**{"If-None-Match": '"other"'}).status_code == 200
    for spec, (start, end) in {"bytes=0-99": (0, 100), "bytes=1000-": (1000, 1024), "bytes=-24": (1000, 1024),
                               "bytes=1000-5000": (1000, 1024)}.items():  # fmt: skip
        part = get(Range=spec)
        assert part.status_code == 206, spec
        assert part.content == DATA[start:end]
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/1024"
        assert part.headers["content-length"] == str(end - start)
    for spec in ("bytes=1024-", "bytes=2000-3000", "bytes=-0", "bytes=5-2"):
        unsatisfiable = get(Range=spec)
        assert unsatisfiable.status_code == 416, spec
        assert unsatisfiable.headers["content-range"] == "bytes */1024"
    assert get(Range="bytes=0-1", **{"If-Range": '"stale"'}).status_code == 200
    assert get(Range="bytes=0-1", **{"If-Range": f'"{sha}"'}).status_code == 206
    assert get(Range="bytes=0-1,5-6").status_code == 200


def test_artifact_names(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    """Traversal and odd names are 400 (never a file lookup); a well-formed unknown name is 404."""
    job = seed.job(status="succeeded")
    seed.artifact(job, "model.json", b"{}", "application/json")
    for name in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E/model.json", ".hidden", "a//b", "a%00b", "x" * 201):
        response = client.get(f"/v1/jobs/{job}/artifacts/{name}", headers=headers)
        assert response.status_code in (400, 404), name
        assert response.headers["content-type"] == "application/problem+json"
    encoded = client.get(f"/v1/jobs/{job}/artifacts/..%2F..%2Fsecrets", headers=headers)
    assert encoded.status_code == 400
    assert client.get(f"/v1/jobs/{job}/artifacts/missing.png", headers=headers).status_code == 404
    assert client.get(f"/v1/jobs/{job}/artifacts/sub/dir/x.png", headers=headers).status_code == 404
