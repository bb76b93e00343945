"""Store fixtures: `store` runs a test against a file:// folder and against a real S3 server.

Fixtures:
    s3_server   session  a SeaweedFS (tests/s3_server.py), started once
    s3_settings function Settings for an s3:// store on it, under a fresh key prefix
    store       function parametrised: FileStore in tmp_path, and S3Store on s3_server (own prefix)
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from ganft.settings import Settings
from ganft.store import Store, open_store
from tests.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3, s3_server  # noqa: F401 - fixture

__all__ = ["s3_server"]


@pytest.fixture
def s3_settings(s3_server: SeaweedS3, tmp_path: Path) -> Settings:  # noqa: F811
    return Settings(
        data_dir=tmp_path / "data",
        store_url=f"s3://{BUCKET}/t-{secrets.token_hex(4)}",
        store_endpoint=s3_server.endpoint,
        store_region="us-east-1",
        store_access_key_id=ACCESS_KEY,
        store_secret_access_key=SecretStr(SECRET_KEY),
        store_path_style=True,
        store_part_bytes=5 * 1024**2,
        store_timeout_s=5.0,
        store_max_retries=1,
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return open_store((tmp_path / "s").as_uri())
    settings = request.getfixturevalue("s3_settings")
    return open_store(settings.store_url, settings)
