"""`/v1/models` with a user's sentence encoder (role `encoder`): safetensors + tokenizer.json + config, checked
without torch; a text job may start from it, a job on other data may not."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from ganft.settings import Settings
from ganft_core.data.text import builtin_encoder_dir
from tests.api.conftest import Seed, safetensors_bytes

ENCODER = {"architecture": "minilm", "role": "encoder", "arguments": {"layers": 2}, "input_layout": {"kind": "text"}}
WEIGHTS = safetensors_bytes({"embeddings.word_embeddings.weight": ("F32", [8, 4])})
TEXT_CSV = b"text,label\na sharp funny film,fresh\na dull mess,rotten\nno label yet,\n"


def _upload(client: TestClient, headers: dict[str, str], config: dict[str, Any], **files: bytes) -> Any:
    parts = {name: (f"{name}.bin", data) for name, data in files.items()}
    return client.post("/v1/models", headers=headers, files=parts, data={"config": json.dumps(config)})


def test_encoder_upload(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """weights + tokenizer + config: 201, role encoder; the store folder holds the tokenizer beside the weights."""
    tokenizer = (builtin_encoder_dir() / "tokenizer.json").read_bytes()
    response = _upload(client, headers, ENCODER, weights=WEIGHTS, tokenizer=tokenizer)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["role"] == "encoder" and model["kind"] == "weights"
    assert model["config"]["architecture"] == "minilm" and model["config"]["class_names"] == []
    folder = settings.data_dir / "store" / "models" / model["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors", "tokenizer.json"]
    assert (folder / "tokenizer.json").read_bytes() == tokenizer


def test_encoder_upload_errors(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """Each is a 422 naming the field, and leaves nothing in the store."""
    tok = (builtin_encoder_dir() / "tokenizer.json").read_bytes()
    image = {"architecture": "mlp", "arguments": {}, "class_names": ["a", "b"], "input_layout": {"kind": "features"}}
    cases = [
        (ENCODER, {"weights": WEIGHTS}, "tokenizer"),  # no tokenizer
        (ENCODER, {"weights": WEIGHTS, "tokenizer": b"\x80\x04K."}, "tokenizer"),  # not JSON
        (ENCODER, {"weights": WEIGHTS, "tokenizer": b'{"version": "1.0"}'}, "tokenizer"),  # no model
        (image, {"weights": WEIGHTS, "tokenizer": tok}, "tokenizer"),  # a tokenizer for a non-text model
        ({**ENCODER, "class_names": ["a", "b"]}, {"weights": WEIGHTS, "tokenizer": tok}, "config.role"),
        ({**ENCODER, "input_layout": {"kind": "image"}}, {"weights": WEIGHTS, "tokenizer": tok}, "config.role"),
        ({**ENCODER, "input_layout": {"kind": "text", "max_length": 9999}}, {"weights": WEIGHTS, "tokenizer": tok},
         "config.input_layout.max_length"),
        ({"class_names": ["a", "b"], "input_layout": {"kind": "text"}}, {"program": b"PK\x03\x04", "tokenizer": tok},
         "program"),
    ]  # fmt: skip
    for config, files, field in cases:
        response = _upload(client, headers, config, **files)
        assert response.status_code == 422, (field, response.text)
        assert field in [e["field"] for e in response.json()["errors"]], (field, response.json())
    models = settings.data_dir / "store" / "models"
    assert not models.exists() or not any(models.iterdir())


def test_a_text_job_may_start_from_an_encoder(client: TestClient, headers: dict[str, str], seed: Seed) -> None:
    tokenizer = (builtin_encoder_dir() / "tokenizer.json").read_bytes()
    encoder = _upload(client, headers, ENCODER, weights=WEIGHTS, tokenizer=tokenizer).json()["id"]
    text = client.post("/v1/datasets", headers=headers, files={"file": ("r.csv", TEXT_CSV)}, data={"format": "text"})
    assert text.status_code == 201, text.text
    job = {"method": "ssgan", "base_model_id": encoder}
    ok = client.post("/v1/jobs", headers=headers, json={**job, "dataset_id": text.json()["id"]})
    assert ok.status_code == 201 and ok.json()["base_model_id"] == encoder
    other = client.post("/v1/jobs", headers=headers, json={**job, "dataset_id": seed.dataset()})  # a csv dataset
    assert other.status_code == 422 and [e["field"] for e in other.json()["errors"]] == ["base_model_id"]
    adapt = client.post("/v1/jobs", headers=headers, json={**job, "method": "adapt", "dataset_id": seed.dataset()})
    assert adapt.status_code == 422 and "encoder" in adapt.json()["detail"]
    image_model = seed.model(role="classifier")  # config {"architecture": "mlp"}: not a text model
    image = client.post(
        "/v1/jobs", headers=headers, json={**job, "base_model_id": image_model, "dataset_id": text.json()["id"]}
    )
    assert image.status_code == 422 and "not a text model" in image.json()["detail"]
