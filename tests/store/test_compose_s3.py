"""docker-compose.yml (cannot run here: no Docker engine) has the several-machine store shape:
an S3 service, the API and workers pointed at it, and no volume shared between API and workers."""

from __future__ import annotations

from pathlib import Path

import yaml

from ganft.settings import Settings
from ganft.store import open_store
from ganft.store_s3 import S3Store

ROOT = Path(__file__).resolve().parents[2]


def test_compose_api_and_workers_share_only_the_s3_server() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    s3 = services["s3"]
    assert s3["command"][0] == "mini" and "-s3.port=8333" in s3["command"]
    named = set(compose["volumes"])
    volumes = {}
    for name in ("api", "worker"):
        service = services[name]
        env = service["environment"]
        assert env["GANFT_STORE_URL"].startswith("s3://") and env["AWS_ENDPOINT_URL"] == "http://s3:8333"
        assert service["depends_on"]["s3"]["condition"] == "service_healthy"
        volumes[name] = {v.split(":")[0] for v in service.get("volumes", []) if v.split(":")[0] in named}
    assert not volumes["api"] & volumes["worker"], volumes


def test_compose_store_settings_resolve_to_an_s3_store(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The environment compose gives the API opens an S3 store with those options (no network needed)."""
    env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]["environment"]
    for name, value in env.items():
        if name.startswith(("GANFT_STORE", "AWS_")):
            monkeypatch.setenv(name, value.split(":-")[-1].rstrip("}") if value.startswith("${") else value)
    monkeypatch.setenv("GANFT_DATA_DIR", str(tmp_path))
    settings = Settings()
    store = open_store(settings.store_url, settings)
    assert isinstance(store, S3Store)
    assert store.url == "s3://ganft/artifacts" and store.options.path_style
    assert store.options.endpoint == "http://s3:8333" and store.options.access_key_id == "ganft"
    assert store.cache_root == (tmp_path / "store-cache").resolve()
