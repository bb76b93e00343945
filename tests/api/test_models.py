"""`/v1/models`: uploads checked without torch (safetensors headers, .pt2 layouts), reads, downloads."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ganft.settings import Settings
from tests.api.conftest import safetensors_bytes

CLASSIFIER = {
    "architecture": "mlp",
    "arguments": {"in_features": 3, "num_classes": 2},
    "class_names": ["cat", "dog"],
    "input_layout": {"kind": "features", "features": 3},
}


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def pt2_bytes() -> bytes:
    """The layout torch.export.save writes (torch 2.13), with placeholder contents."""
    return _zip(
        {
            "m/data/weights/weight_0": b"\0" * 48,
            "m/data/weights/model_weights_config.json": b"{}",
            "m/data/constants/model_constants_config.json": b"{}",
            "m/models/model.json": b"{}",
            "m/archive_format": b"pt2",
            "m/archive_version": b"0",
            "m/byteorder": b"little",
        }
    )


def _upload(client: TestClient, headers: dict[str, str], files: dict[str, tuple[str, bytes]], config: object):  # type: ignore[no-untyped-def]
    data = {"config": config if isinstance(config, str) else json.dumps(config)}
    return client.post("/v1/models", headers=headers, files=files, data=data)


def test_upload_weights_read_and_download(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """safetensors + config: 201; GET shows model.json; the store folder is a trainer's base_model folder;
    the weights download has the sha256 ETag, answers 304 to If-None-Match and 206 to a Range."""
    weights = safetensors_bytes()
    response = _upload(client, headers, {"weights": ("clf.safetensors", weights)}, CLASSIFIER)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["kind"] == "weights" and model["role"] == "classifier" and model["name"] == "clf.safetensors"
    assert model["sha256"] == hashlib.sha256(weights).hexdigest() and model["size_bytes"] == len(weights)
    assert model["config"]["class_names"] == ["cat", "dog"] and model["config"]["role"] == "classifier"
    assert client.get(f"/v1/models/{model['id']}", headers=headers).json() == model

    folder = settings.data_dir / "store" / "models" / model["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads((folder / "model.json").read_text())["architecture"] == "mlp"

    download = client.get(f"/v1/models/{model['id']}/weights", headers=headers)
    assert download.status_code == 200 and download.content == weights
    assert download.headers["etag"] == f'"{model["sha256"]}"'
    cached = client.get(
        f"/v1/models/{model['id']}/weights", headers={**headers, "If-None-Match": download.headers["etag"]}
    )
    assert cached.status_code == 304 and cached.content == b""
    part = client.get(f"/v1/models/{model['id']}/weights", headers={**headers, "Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == weights[:8]
    assert part.headers["content-range"] == f"bytes 0-7/{len(weights)}"
    assert [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]] == [model["id"]]


def test_upload_gan(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """A generator with a `discriminator` file + config.discriminator is a `gan`: model.* is G, discriminator.* is D."""
    config = {
        "architecture": "mlp_g",
        "role": "generator",
        "arguments": {"z_dim": 8},
        "input_layout": {"kind": "features", "features": 3},
        "discriminator": {"architecture": "mlp_d", "arguments": {}},
        "name": "tabular gan",
    }
    files = {"weights": ("g.safetensors", safetensors_bytes()), "discriminator": ("d.safetensors", safetensors_bytes())}
    response = _upload(client, headers, files, config)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["role"] == "gan" and model["name"] == "tabular gan"
    folder = settings.data_dir / "store" / "models" / model["id"]
    assert json.loads((folder / "discriminator.json").read_text())["role"] == "discriminator"
    assert json.loads((folder / "model.json").read_text())["role"] == "generator"
    # only one of the two parts is a 422
    half = _upload(client, headers, {"weights": ("g.safetensors", safetensors_bytes())}, config)
    assert half.status_code == 422 and half.json()["errors"][0]["field"] == "discriminator"


def test_upload_program(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """A torch.export .pt2 + class names: 201, kind program; model.json is {format: program, class_names}."""
    response = _upload(client, headers, {"program": ("net.pt2", pt2_bytes())}, {"class_names": ["a", "b", "c"]})
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["kind"] == "program" and model["role"] == "classifier"
    assert model["config"] == {"format": "program", "class_names": ["a", "b", "c"]}
    folder = settings.data_dir / "store" / "models" / model["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pt2"]
    download = client.get(f"/v1/models/{model['id']}/weights", headers=headers)
    assert download.status_code == 200 and download.content == pt2_bytes()


@pytest.mark.slow
def test_real_torch_export_program_is_accepted(client: TestClient, headers: dict[str, str], tmp_path: Path) -> None:
    """A program really written by torch.export.save passes the torch-free check; a TorchScript save does not."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), str(tmp_path / "net.pt2"))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net_ts.pt"))
    config = {"class_names": ["a", "b", "c"]}
    response = _upload(client, headers, {"program": ("net.pt2", (tmp_path / "net.pt2").read_bytes())}, config)
    assert response.status_code == 201, response.text
    refused = _upload(client, headers, {"program": ("net.pt2", (tmp_path / "net_ts.pt").read_bytes())}, config)
    assert refused.status_code == 422 and "TorchScript" in refused.json()["detail"]


def test_refused_weights(client: TestClient, headers: dict[str, str], settings: Settings) -> None:
    """Pickles, torch.save/TorchScript zips, and safetensors with gaps, short data, bad dtypes: 422 on `weights`."""
    bad_dtype = safetensors_bytes().replace(b'"F32"', b'"Q99"', 1)
    cases = {
        "pickle": pickle.dumps({"weight": [1.0, 2.0]}),
        "torch.save zip": _zip({"sd/data.pkl": b"\x80\x02}q\x00.", "sd/version": b"3"}),
        "gap": safetensors_bytes(corrupt="gap"),
        "short": safetensors_bytes(corrupt="short"),
        "dtype": bad_dtype,
        "garbage": b"\xff" * 64,
        "empty": b"",
    }
    for what, data in cases.items():
        response = _upload(client, headers, {"weights": ("w.safetensors", data)}, CLASSIFIER)
        assert response.status_code == 422, (what, response.text)
        assert response.json()["errors"][0]["field"] == "weights", what
    assert "pickle" in _upload(client, headers, {"weights": ("w", cases["pickle"])}, CLASSIFIER).json()["detail"]
    assert not (settings.data_dir / "store" / "models").exists() or not any(
        (settings.data_dir / "store" / "models").iterdir()
    )


def test_refused_programs(client: TestClient, headers: dict[str, str]) -> None:
    """TorchScript archives, torch.save pickles, non-zips, zips without the pt2 layout and traversal paths: 422."""
    torchscript = _zip({"m/data.pkl": b"x", "m/constants.pkl": b"x", "m/code/__torch__/m.py": b"x", "m/version": b"1"})
    cases = {
        "torchscript": torchscript,
        "pickle": pickle.dumps([1, 2]),
        "not a zip": b"hello",
        "no layout": _zip({"m/models/model.json": b"{}"}),
        "traversal": _zip({"m/archive_format": b"pt2", "m/models/model.json": b"{}", "m/../evil": b"x"}),
        "aoti": _zip({"m/archive_format": b"pt2", "m/models/model.json": b"{}", "m/data/aotinductor/m.so": b"x"}),
    }
    for what, data in cases.items():
        response = _upload(client, headers, {"program": ("p.pt2", data)}, {"class_names": ["a"]})
        assert response.status_code == 422, (what, response.text)
        assert response.json()["errors"][0]["field"] == "program", what
    assert (
        "TorchScript"
        in _upload(client, headers, {"program": ("p", torchscript)}, {"class_names": ["a"]}).json()["detail"]
    )


def test_config_errors(client: TestClient, headers: dict[str, str]) -> None:
    """Bad configs are 422s naming the config field; both weights and program, or neither, are 422 too."""
    weights = {"weights": ("w.safetensors", safetensors_bytes())}
    no_layout = {k: v for k, v in CLASSIFIER.items() if k != "input_layout"}
    cases = [
        (weights, "{not json", "config"),
        (weights, {**CLASSIFIER, "class_names": []}, "config.class_names"),
        (weights, {**CLASSIFIER, "architecture": ""}, "config.architecture"),
        (weights, no_layout, "config.input_layout"),
        (weights, {**CLASSIFIER, "colour": "blue"}, "config.colour"),
        (weights, {**CLASSIFIER, "input_layout": {"kind": "image", "channels": 99}}, "config.input_layout.channels"),
        ({"program": ("p.pt2", pt2_bytes())}, {}, "config.class_names"),
        ({**weights, "program": ("p.pt2", pt2_bytes())}, CLASSIFIER, "program"),
        ({"other": ("x", b"1")}, CLASSIFIER, "other"),
    ]
    for files, config, field in cases:
        response = _upload(client, headers, files, config)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["errors"][0]["field"] == field
    missing = client.post("/v1/models", headers=headers, files={"config": (None, json.dumps(CLASSIFIER))})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "weights"
    assert client.post("/v1/models", headers=headers, json=CLASSIFIER).status_code == 415


def test_unknown_model_is_404(client: TestClient, headers: dict[str, str]) -> None:
    """An id that never existed: 404 for the model and its weights."""
    assert client.get("/v1/models/mdl_00000000000000000000000a", headers=headers).status_code == 404
    assert client.get("/v1/models/mdl_00000000000000000000000a/weights", headers=headers).status_code == 404
