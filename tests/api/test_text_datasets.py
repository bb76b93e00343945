"""`/v1/datasets` with the `text` format (GAN-BERT): a text CSV or JSONL is validated by the inspector subprocess."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

TEXT_CSV = b'text,label\n"a sharp, funny film",fresh\na dull mess,rotten\n"no label, yet",\nwarm and wise,fresh\n'


def test_text_csv_upload_reports_token_lengths(client: TestClient, headers: dict[str, str]) -> None:
    """format=text: classes from the label column, token-length percentiles from the built-in tokenizer."""
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("reviews.csv", TEXT_CSV)},
        data={"format": "text", "name": "reviews"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == "text" and body["status"] == "ready"
    stats = body["stats"]
    assert stats["classes"] == ["fresh", "rotten"] and stats["labeled"] == 3 and stats["unlabeled"] == 1
    assert stats["layout"] == {"kind": "text"}
    assert stats["tokens"]["max"] >= stats["tokens"]["p50"] >= 4 and stats["over_max_length"] == {"64": 0, "512": 0}


def test_jsonl_extension_means_text(client: TestClient, headers: dict[str, str]) -> None:
    rows = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}, {"text": "hm"}]
    content = "\n".join(json.dumps(r) for r in rows).encode()
    response = client.post("/v1/datasets?name=reviews.jsonl", headers=headers, content=content)
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "text" and response.json()["stats"]["unlabeled"] == 1


def test_text_errors_are_422_naming_the_line(client: TestClient, headers: dict[str, str]) -> None:
    cases = [
        (b'text,label\n"  ",fresh\nok,rotten\n', "line 2: the text is empty"),
        (b"text,label\ngood,fresh\nbad,fresh\n", "too few labels"),
        (b"text,label\n\xff\xfe,fresh\n", "not UTF-8"),
    ]
    for content, message in cases:
        response = client.post(
            "/v1/datasets", headers=headers, files={"file": ("r.csv", content)}, data={"format": "text"}
        )
        assert response.status_code == 422, response.text
        assert message in response.json()["detail"]
