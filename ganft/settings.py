"""Service settings: environment variables with the `GANFT_` prefix, read in one place.

With nothing set, everything lives under `GANFT_DATA_DIR` (default `./.ganft`): a SQLite
file, a server-less Celery transport and a local artifact folder (the embedded default).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", "todo"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANFT_", extra="ignore", populate_by_name=True)

    data_dir: Path = Path(".ganft")  # root of every default location below
    database_url: str = ""  # SQLAlchemy URL; default: sqlite file in data_dir
    broker_url: str = ""  # Celery broker; default: kombu filesystem transport in data_dir
    store_url: str = ""  # artifact store; default: file:// folder in data_dir
    # s3://BUCKET/PREFIX stores (ganft/store_s3.py). Each falls back to the standard AWS variable,
    # as in the AWS SDKs; unset ones are left to obstore's own AWS lookup (env, instance profile).
    store_endpoint: str = Field(default="", validation_alias=AliasChoices("GANFT_STORE_ENDPOINT", "AWS_ENDPOINT_URL"))
    store_region: str = Field(default="", validation_alias=AliasChoices("GANFT_STORE_REGION", "AWS_REGION"))
    store_access_key_id: str = Field(
        default="", validation_alias=AliasChoices("GANFT_STORE_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    store_secret_access_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("GANFT_STORE_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    store_path_style: bool = False  # http://endpoint/BUCKET/key, not http://BUCKET.endpoint/key (MinIO, SeaweedFS)
    store_part_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2)  # multipart part size (S3 minimum 5 MiB)
    store_max_concurrency: int = Field(default=2, ge=1, le=64)  # parts in flight per upload (memory: about +2 parts)
    store_timeout_s: float = Field(default=30.0, gt=0)  # one S3 request, wall clock
    store_max_retries: int = Field(default=3, ge=0)  # per S3 request, with backoff
    # Downloads answer 307 to a presigned S3 URL (valid this long) instead of streaming through the API.
    store_presign: bool = False
    store_presign_expires_s: float = Field(default=600.0, ge=1, le=7 * 24 * 3600)
    store_cache_dir: Path | None = None  # local copies of S3 objects (inputs, inspection); default data_dir/store-cache

    # Retention (ganft/retention.py, run by the workers' sweeper and `ganft admin gc`). The defaults keep
    # everything a user can read except the superseded live-picture versions of finished jobs.
    retain_checkpoints_days: float | None = Field(default=None, ge=0)  # finished jobs' checkpoints; None: forever
    retain_checkpoints_last_only: bool = False  # a finished job keeps only its newest checkpoint
    retain_picture_versions: bool = False  # keep a finished job's superseded live-picture versions
    retain_artifacts_days: float | None = Field(
        default=None, ge=0
    )  # finished jobs' artifacts (model unused); None: forever
    gc_interval_s: float = Field(default=3600.0, gt=0)  # how often each worker's sweeper runs the garbage collector
    gc_grace_s: float = Field(
        default=3600.0, ge=0
    )  # an unreferenced object younger than this is kept (in-flight writes)

    max_upload_bytes: int = Field(default=32 * 1024**3, ge=1)  # datasets and models, per upload (disk, not RAM)
    max_json_bytes: int = Field(default=1024**2, ge=1024)  # JSON request bodies
    rate_limit_per_s: float = Field(default=200.0, gt=0)  # sustained requests per API key
    rate_limit_burst: int = Field(default=400, ge=1)  # token bucket size per API key
    auth_cache_s: float = Field(default=5.0, ge=0)  # each API process reuses a key lookup this long; 0 = off

    lease_s: float = Field(default=60.0, gt=0)  # a job's lease; renewed every lease_s / 4
    reaper_interval_s: float = Field(default=10.0, gt=0)  # how often workers sweep expired leases
    max_attempts: int = Field(default=3, ge=1)  # worker_lost after this many lost attempts
    # Preemption (ganft/repo/preemption.py): a `high` job rung this long ago and still queued (no worker
    # free) has the newest running `low` job checkpointed and queued again, one at a time. Off by default.
    preemption: bool = False
    preempt_after_s: float = Field(default=30.0, gt=0)  # seconds a `high` job waits before it preempts
    cancel_grace_s: float = Field(default=5.0, ge=0)  # cooperative stop, then the child is killed
    progress_interval_s: float = Field(default=0.5, gt=0)  # at most one progress write per interval
    torch_threads: int = Field(default=0, ge=0, le=1024)  # CPU threads per training child; 0 = half the CPUs
    inception_weights: Path | None = None  # local Inception weights for FID (else the spec's evaluator)

    # An upload still `uploading` this long after it began is taken as dead (its API process was
    # killed): the next API process to start removes the row and its partial file.
    stale_upload_s: float = Field(default=24 * 3600.0, gt=0)
    inspect_timeout_s: float = Field(default=300.0, gt=0)  # dataset inspection subprocess, wall clock
    inspect_max_memory_bytes: int = Field(default=8 * 1024**3, ge=256 * 1024**2)  # its address-space limit
    broker_timeout_s: float = Field(default=2.0, gt=0)  # API: connect/publish to the broker, /readyz probe
    # Redis re-delivers a message not acked after this long (kombu's default: 1 h). Messages are
    # acked on receipt (worker/app.py), so it only matters for a worker killed mid-receipt.
    broker_visibility_timeout_s: float | None = Field(default=None, gt=0)
    sse_poll_interval_s: float = Field(default=0.5, gt=0)  # how often an event stream looks for new events
    sse_ping_interval_s: float = Field(default=15.0, gt=0)  # `: ping` comment on an idle event stream

    webhook_secret: str = ""  # signs webhooks; refused when a placeholder
    # Let webhooks target loopback, private, link-local (cloud metadata) and other non-public
    # addresses. Off: a tenant must not make the worker POST into the service's own network.
    webhook_allow_private: bool = False

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        if self.webhook_secret.lower() in PLACEHOLDER_SECRETS:
            raise ValueError("GANFT_WEBHOOK_SECRET is a placeholder: set a real secret or leave it empty")
        if self.store_secret_access_key.get_secret_value().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("the S3 secret access key is a placeholder: set the real one or leave it empty")
        data = self.data_dir.resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{data / 'ganft.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        if not self.store_url:
            self.store_url = (data / "store").as_uri()
        if self.store_cache_dir is None:
            self.store_cache_dir = data / "store-cache"
        return self

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem://")

    @property
    def broker_folder(self) -> Path:
        """Where the server-less transport keeps its messages."""
        return self.data_dir.resolve() / "broker"

    def broker_transport_options(self) -> dict[str, Any]:
        """Kombu transport options every producer and consumer of `broker_url` must share.

        The filesystem transport reads and writes one folder (and keeps Celery's fanout
        table in a subfolder); a producer with other folders would post where no worker looks.
        Creates the folders. Network brokers get a short connect timeout.
        """
        if self.is_embedded_broker:
            control = self.broker_folder / "control"
            control.mkdir(parents=True, exist_ok=True)
            folder = str(self.broker_folder)
            return {"data_folder_in": folder, "data_folder_out": folder, "control_folder": str(control)}
        if self.broker_url.startswith(("redis://", "rediss://")):
            options: dict[str, Any] = {"socket_connect_timeout": self.broker_timeout_s}
            if self.broker_visibility_timeout_s is not None:
                options["visibility_timeout"] = self.broker_visibility_timeout_s
            return options
        return {}


@lru_cache
def get_settings() -> Settings:
    return Settings()
