"""The one configuration object, read from ``GRAYWAVE_*`` environment variables."""

from __future__ import annotations

import os
import re
from datetime import date, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from graywave.errors import BackendUnavailable

METRICS_MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess mode: the folder where the API's workers write their metrics
(``graywave api --workers N`` makes a fresh one)."""
WAVE_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
"""Wave names start with a letter so that Hive partitioning never reads ``wave=`` as a number."""


class Settings(BaseSettings):
    """Everything graywave can be told, with the embedded defaults (no services needed)."""

    model_config = SettingsConfigDict(env_prefix="GRAYWAVE_", frozen=True)

    blob_url: str = Field("./data/blobs", description="Blob store root: a local folder or s3://bucket/prefix.")
    lake_url: str = Field("./data/lake", description="Delta lake root: a local folder or s3://bucket/prefix.")
    s3_endpoint_url: str | None = Field(
        None, description="An S3-compatible server (MinIO, Ceph, SeaweedFS); AWS if unset."
    )
    s3_region: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]{1,32}$",
        description="The bucket's region, which every SigV4 signature and presigned URL names (on AWS, set it to"
        " the bucket's region); if unset, the AWS chain's (AWS_REGION, AWS_DEFAULT_REGION, the profile), else"
        " us-east-1.",
    )
    mongodb_uri: SecretStr | None = Field(
        None, description="MongoDB connection string; when set, images are also recorded there (never printed)."
    )
    mongodb_database: str = Field("graywave", description="MongoDB database of the images collection.")
    backend_retry_s: float = Field(
        60.0,
        gt=0,
        description="How long a backend (S3, the lake on S3, MongoDB) may stay unreachable before a wave or a"
        " lake read gives up.",
    )
    lake_retention_hours: float = Field(
        168.0,
        ge=0,
        description="How long the lake keeps the files of old table versions (time travel) before maintenance"
        " vacuums them; a deleted image's bytes leave the lake's files then.",
    )
    prefect_home: Path = Field(Path("./data/prefect"), description="PREFECT_HOME unless that is set.")
    timezone: str = Field("UTC", description="Service time zone (IANA name): upload dates, wave days, schedules.")
    device: Literal["auto", "cpu", "gpu"] = Field(  # kernels.device.DeviceName
        "auto", description="auto (the GPU if CuPy sees one), cpu or gpu."
    )
    bins: int = Field(16, description="Histogram bins; a power of two from 1 to 256.")
    max_pixels: int = Field(
        256_000_000,
        gt=0,
        description="Uploads with more pixels are rejected (too_many_pixels), from the header, before decoding.",
    )
    max_decode_bytes: int = Field(
        2 * 1024**3,  # kernels.codecs.DEFAULT_MAX_DECODE_BYTES
        gt=0,
        description="Memory one decode may need, from the header's size and mode (rejected over_decode_budget).",
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="Quality of the processed grayscale JPEG.")
    batch_size: int = Field(
        64, ge=1, description="Most uploads in one Prefect task (smaller waves get smaller batches)."
    )
    max_upload_bytes: int = Field(50_000_000, gt=0, description="Largest direct upload a presigned POST allows.")
    upload_url_expiry_s: int = Field(300, gt=0, le=3600, description="Lifetime of a presigned upload.")
    api_tokens_file: Path = Field(
        Path("./data/api-tokens.json"),
        description="A JSON token file of earlier versions: migrated into the token store once, then renamed"
        " FILE.migrated.",
    )
    api_tokens_db: Path | None = Field(
        None,
        description="The SQLite token store (tokens' SHA-256 digests, idempotency keys) when MongoDB is not"
        " configured; default: beside GRAYWAVE_API_TOKENS_FILE, with the suffix .db.",
    )
    api_processing_slots: int = Field(
        2, ge=1, description="Uploads the API processes at once (?wait=true, replace); more wait in a queue."
    )
    api_processing_queue: int = Field(
        32,
        ge=0,
        description="Requests that wait for a processing slot, past the slots; more answer 503 with Retry-After.",
    )
    api_user_inflight: int = Field(
        2,
        ge=1,
        description="Expensive requests (charts, ?wait=true uploads, replaces, reprocessing) of one user in flight"
        " in one API process; more answer 429 (too_many_requests) with Retry-After.",
    )
    api_chart_queue: int = Field(
        32,
        ge=0,
        description="Chart requests that wait for a drawing thread, past those drawing; more answer 503 (busy)"
        " with Retry-After.",
    )
    api_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's line and headers must arrive within this long of its first byte (of the"
        " connection, for its first request); else 408 and the connection is closed.",
    )
    api_body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body may take this long, plus its bytes at GRAYWAVE_API_BODY_MIN_RATE; a slower"
        " body is cut off with 408, nothing stored.",
    )
    api_body_min_rate: int = Field(
        4096, gt=0, description="Bytes a second a request body must average, after GRAYWAVE_API_BODY_TIMEOUT_S."
    )
    api_inline_reprocess_max: int = Field(
        10,
        ge=0,
        description="Images a PUT reprocesses inside the request; more run as a background job (a Prefect flow run"
        " that graywave serve runs).",
    )
    metrics: Literal["off", "token", "public"] = Field(
        "token",
        description="Who may read GET /metrics (Prometheus): token (an admin bearer token), public (anyone who"
        " reaches the API), off (no route, 404); see docs/operations.md, Metrics.",
    )
    io_threads: int = Field(
        8, ge=1, description="Blob reads and writes in flight per batch (hides S3 latency behind decoding)."
    )
    lake_flush_rows: int = Field(8192, ge=1, description="Rows buffered before the wave commits them to the lake.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Batches processed at once on this machine; default: the CPU count.",
    )
    wave_settle_s: float = Field(
        600.0,
        ge=0,
        description="Settle window of the scheduled waves: they collect until nothing new arrived for this long.",
    )
    wave_max_duration_s: float = Field(
        3600.0, ge=0, description="The longest a wave keeps collecting uploads (with a settle window)."
    )
    wave_poll_s: float = Field(
        10.0,
        gt=0,
        description="In a settle window: the least time between two listings, and the longest rows wait before"
        " they are written to the lake.",
    )
    dask_address: str | None = Field(
        None, description="Run the waves' batches on the Dask cluster of this scheduler (tcp://host:8786)."
    )
    dask_workers: int | None = Field(
        None, ge=1, description="Run the waves' batches on a local Dask cluster of this many worker processes."
    )
    dask_dashboard: str | None = Field(
        None,
        description="With GRAYWAVE_DASK_WORKERS: the local cluster's dashboard at this address (e.g. :8787); off"
        " if unset.",
    )
    oidc_issuer: str | None = Field(
        None,
        description="Also accept the JWTs of this OpenID Connect issuer (its tokens' exact iss) as bearer tokens;"
        " see docs/security.md, Tokens from an identity provider.",
    )
    oidc_audience: str | None = Field(
        None,
        description="With GRAYWAVE_OIDC_ISSUER, required: the aud the tokens must carry (the app's client or API id).",
    )
    oidc_jwks_url: str | None = Field(
        None,
        description="With GRAYWAVE_OIDC_ISSUER: its signing keys (JWKS); default: the jwks_uri of the issuer's"
        " /.well-known/openid-configuration.",
    )
    oidc_user_claim: str = Field(
        "sub",
        min_length=1,
        description="With GRAYWAVE_OIDC_ISSUER: the claim of a token that is the graywave user id (a scope with"
        " graywave:admin makes an admin token).",
    )

    @model_validator(mode="after")
    def _one_batch_runner(self) -> Settings:
        if self.dask_address and self.dask_workers:
            raise ValueError(
                "set GRAYWAVE_DASK_ADDRESS (a running cluster) or GRAYWAVE_DASK_WORKERS (a local one), not both"
            )
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer is None:
            if self.oidc_audience is not None or self.oidc_jwks_url is not None:
                raise ValueError(
                    "GRAYWAVE_OIDC_AUDIENCE and GRAYWAVE_OIDC_JWKS_URL need GRAYWAVE_OIDC_ISSUER (the identity"
                    " provider whose tokens the API accepts)"
                )
            return self
        if not self.oidc_audience:
            raise ValueError(
                "GRAYWAVE_OIDC_AUDIENCE is required with GRAYWAVE_OIDC_ISSUER: the aud that the identity"
                " provider puts in the app's tokens (its client id or API identifier)"
            )
        for name, url in (("GRAYWAVE_OIDC_ISSUER", self.oidc_issuer), ("GRAYWAVE_OIDC_JWKS_URL", self.oidc_jwks_url)):
            if url is not None and not _is_web_url(url):
                raise ValueError(f"{name} must be an http:// or https:// URL with a host, not {url!r}")
        return self

    @property
    def batch_runner(self) -> str:
        """Who runs a wave's batches: ``threads`` (the default), or a Dask cluster."""
        if self.dask_address:
            return f"dask cluster at {self.dask_address}"
        if self.dask_workers:
            return f"local dask cluster of {self.dask_workers} worker processes"
        return f"threads of this process ({self.workers} at once)"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Rome") from None
        return value

    @field_validator("bins")
    @classmethod
    def _bins_divide_256(cls, value: int) -> int:
        if value < 1 or value > 256 or 256 % value:
            raise ValueError("bins must be a power of two between 1 and 256")
        return value

    @property
    def api_tokens_db_path(self) -> Path:
        """The SQLite token store: ``api_tokens_db``, or ``api_tokens_file`` with the suffix ``.db``."""
        return self.api_tokens_db or self.api_tokens_file.with_suffix(".db")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def today(self) -> date:
        """Today's date in the service time zone."""
        return datetime.now(self.zone).date()

    def day_of(self, instant: datetime) -> date:
        """The date of ``instant`` (aware) in the service time zone: a scheduled run's day."""
        return instant.astimezone(self.zone).date()


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def validate_wave_name(name: str) -> str:
    if not WAVE_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"wave name {name!r} must start with a letter and use only letters, digits, '_' and '-' (max 32)"
        )
    return name


def prepare_prefect_environment(settings: Settings, *, create_home: bool = True) -> None:
    """Keep Prefect's state under the data folder and its telemetry off, before Prefect is imported.

    Values the operator already set in the environment win. The ``PREFECT_HOME`` folder is created:
    Prefect's temporary server cannot create its database in a folder that is not there (on a fresh
    checkout a wave failed with a thousand lines of traceback); one that cannot be made is
    ``BackendUnavailable``. A command that runs no flow (the API: Prefect's client only) passes
    ``create_home=False``: the folder is named, not made.
    """
    defaults = {
        "PREFECT_HOME": str(settings.prefect_home.resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
        # One line per batch task is noise next to the wave's own progress and summary.
        "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if not create_home:
        return
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackendUnavailable(f"Prefect's state folder {home} (PREFECT_HOME) cannot be made: {error}") from None
