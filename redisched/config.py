"""Settings, read from the environment under mula's names plus our own ``REDISCHED_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


# Defaults that code outside Settings also needs (the queue layout's, see queue/layout.py).
KEY_PREFIX = "rs"
PARTITIONS = 1
DISPATCH_TIMEOUT_SECONDS = 300
GRACE_PERIOD_SECONDS = 86400
MAX_TRIES = 3
SCAN_BUDGET = 2000
SCAN_TIME_US = 1000
ONE_TASK_PER_SCHEDULE = True
FAIRNESS = "none"
# An organisation's weight in the fair pop (lua/includes/fair.lua keeps the same range): a
# tiny one made its virtual time inf, then nan, which broke the fair order for good.
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    # --- mula's settings, same names and defaults -------------------------------------------
    debug: bool = Field(False, validation_alias=_env("DEBUG"))
    logging_format: str = Field("text", validation_alias=_env("SCHEDULER_LOGGING_FORMAT"))
    api_host: str = Field("0.0.0.0", validation_alias=_env("SCHEDULER_API_HOST"))
    api_port: int = Field(8000, validation_alias=_env("SCHEDULER_API_PORT"))
    db_uri: str | None = Field(None, validation_alias=_env("SCHEDULER_DB_URI", "SCHEDULER_DB_DSN"))
    db_migrate_on_start: bool = Field(False, validation_alias=_env("DATABASE_MIGRATION"))
    amqp_uri: str | None = Field(None, validation_alias=_env("QUEUE_URI", "SCHEDULER_RABBITMQ_DSN"))
    rabbitmq_prefetch_count: int = Field(100, validation_alias=_env("SCHEDULER_RABBITMQ_PREFETCH_COUNT"))
    katalogus_api: str | None = Field(None, validation_alias=_env("KATALOGUS_API"))
    octopoes_api: str | None = Field(None, validation_alias=_env("OCTOPOES_API"))
    bytes_api: str | None = Field(None, validation_alias=_env("BYTES_API"))
    bytes_username: str = Field("", validation_alias=_env("BYTES_USERNAME"))
    bytes_password: str = Field("", validation_alias=_env("BYTES_PASSWORD"))
    katalogus_request_timeout: float = Field(10, validation_alias=_env("SCHEDULER_KATALOGUS_REQUEST_TIMEOUT"))
    octopoes_request_timeout: float = Field(10, validation_alias=_env("SCHEDULER_OCTOPOES_REQUEST_TIMEOUT"))
    bytes_request_timeout: float = Field(10, validation_alias=_env("SCHEDULER_BYTES_REQUEST_TIMEOUT"))
    katalogus_pool_connections: int = Field(10, validation_alias=_env("SCHEDULER_KATALOGUS_POOL_CONNECTIONS"))
    octopoes_pool_connections: int = Field(10, validation_alias=_env("SCHEDULER_OCTOPOES_POOL_CONNECTIONS"))
    bytes_pool_connections: int = Field(10, validation_alias=_env("SCHEDULER_BYTES_POOL_CONNECTIONS"))
    pq_grace_period: int = Field(GRACE_PERIOD_SECONDS, validation_alias=_env("SCHEDULER_PQ_GRACE_PERIOD"))
    pq_maxsize: int = Field(0, validation_alias=_env("SCHEDULER_PQ_MAXSIZE"))
    collect_metrics: bool = Field(False, validation_alias=_env("SCHEDULER_COLLECT_METRICS"))

    # --- redisched's own ---------------------------------------------------------------------
    redis_url: str | None = Field(None, validation_alias=_env("REDISCHED_REDIS_URL"))
    redis_cluster: bool = Field(False, validation_alias=_env("REDISCHED_REDIS_CLUSTER"))
    # Connections per process (per node on a cluster); callers past it wait for one.
    redis_max_connections: int = Field(512, validation_alias=_env("REDISCHED_REDIS_MAX_CONNECTIONS"))
    key_prefix: str = Field(KEY_PREFIX, validation_alias=_env("REDISCHED_KEY_PREFIX"))
    # Each queue spread over this many hash-tagged partitions (Redis Cluster: one per shard).
    # Fixed for the life of the data: change it only with the queues empty.
    partitions: int = Field(PARTITIONS, ge=1, le=64, validation_alias=_env("REDISCHED_PARTITIONS"))
    data_dir: Path = Field(Path(".data"), validation_alias=_env("REDISCHED_DATA_DIR"))
    # A popped task not PATCHed to running within this many seconds goes back on its queue.
    dispatch_timeout: int = Field(DISPATCH_TIMEOUT_SECONDS, validation_alias=_env("REDISCHED_DISPATCH_TIMEOUT"))
    # A running task is given up after this long without news (None: mula's grace period).
    running_timeout: int | None = Field(None, validation_alias=_env("REDISCHED_RUNNING_TIMEOUT"))
    # After this many expired leases a task is marked failed instead of requeued.
    max_tries: int = Field(MAX_TRIES, validation_alias=_env("REDISCHED_MAX_TRIES"))
    # How many candidates a pop may examine for a filter no index serves.
    scan_budget: int = Field(SCAN_BUDGET, validation_alias=_env("REDISCHED_SCAN_BUDGET"))
    # A push whose schedule already has a queued, dispatched or running task is refused (409),
    # as upstream PR #5007 does; off: only a queued twin refuses an API push (mula 1.20.1).
    # Limits per boefje group: a JSON list of rules (redisched/limit_rules.py); none by default.
    limits: list[dict] = Field(default_factory=list, validation_alias=_env("REDISCHED_LIMITS"))
    one_task_per_schedule: bool = Field(ONE_TASK_PER_SCHEDULE, validation_alias=_env("REDISCHED_ONE_TASK_PER_SCHEDULE"))
    # Fair pop across organisations: "none" (mula's order) or "organisation" (weighted fair
    # queueing by organisation; README "Fair pop across organisations").
    fairness: Literal["none", "organisation"] = Field(FAIRNESS, validation_alias=_env("REDISCHED_FAIRNESS"))
    # organisation -> weight (MIN_WEIGHT..MAX_WEIGHT) for the fair pop; one not named weighs 1.
    organisation_weights: dict[str, Annotated[float, Field(ge=MIN_WEIGHT, le=MAX_WEIGHT)]] = Field(
        default_factory=dict, validation_alias=_env("REDISCHED_ORGANISATION_WEIGHTS")
    )
    # Bearer tokens; empty = auth off (mula has none).
    admin_tokens: list[str] = Field(default_factory=list, validation_alias=_env("REDISCHED_ADMIN_TOKENS"))
    runner_tokens: list[str] = Field(default_factory=list, validation_alias=_env("REDISCHED_RUNNER_TOKENS"))
    # Read-only: the dashboard and every listing, no change.
    viewer_tokens: list[str] = Field(default_factory=list, validation_alias=_env("REDISCHED_VIEWER_TOKENS"))
    # Seconds between the schedulers' periodic rounds (new boefjes, due schedules, reports).
    scheduler_interval: float = Field(60, validation_alias=_env("REDISCHED_SCHEDULER_INTERVAL"))
    max_body_bytes: int = Field(1 << 20, validation_alias=_env("REDISCHED_MAX_BODY_BYTES"))
    # A pop or peek stops passing over candidates once its script has run this long (µs).
    scan_time_us: int = Field(SCAN_TIME_US, ge=100, le=1_000_000, validation_alias=_env("REDISCHED_SCAN_TIME_US"))
    # Postgres statements of the API (listings, counts, schedules) are cancelled after this.
    db_statement_timeout_ms: int = Field(5000, ge=0, validation_alias=_env("REDISCHED_DB_STATEMENT_TIMEOUT_MS"))
    # uvicorn's line per request (serve, api; --no-access-log); 4xx and 5xx are logged regardless.
    access_log: bool = Field(True, validation_alias=_env("REDISCHED_ACCESS_LOG"))
    # Origins (``https://host[:port]``) whose pages may POST/PATCH/PUT/DELETE; ["*"]: any.
    # The API's own host is always allowed; server-to-server clients send no Origin.
    allowed_origins: list[str] = Field(default_factory=list, validation_alias=_env("REDISCHED_ALLOWED_ORIGINS"))
    # HTTP connections: a request's headers must arrive within this many seconds (from its
    # first byte, or from the connection's opening), its body within the next ...
    http_header_timeout: float = Field(10, gt=0, validation_alias=_env("REDISCHED_HTTP_HEADER_TIMEOUT"))
    http_body_timeout: float = Field(30, gt=0, validation_alias=_env("REDISCHED_HTTP_BODY_TIMEOUT"))
    # ... an idle keep-alive connection is closed after this long, ...
    http_keepalive_timeout: float = Field(5, gt=0, validation_alias=_env("REDISCHED_HTTP_KEEPALIVE_TIMEOUT"))
    # ... request line plus headers larger than this get 431 ...
    http_max_header_bytes: int = Field(16384, ge=1024, validation_alias=_env("REDISCHED_HTTP_MAX_HEADER_BYTES"))
    # ... and past this many open connections per process, requests get 503.
    http_max_connections: int = Field(1000, ge=1, validation_alias=_env("REDISCHED_HTTP_MAX_CONNECTIONS"))
    # On SIGTERM, long-polls answer at once; other requests get this long before they are cut.
    http_shutdown_timeout: float = Field(3, ge=0, validation_alias=_env("REDISCHED_HTTP_SHUTDOWN_TIMEOUT"))
    # /health?externals=true probes each dependency at most once per this many seconds.
    health_cache_seconds: float = Field(5, ge=0, validation_alias=_env("REDISCHED_HEALTH_CACHE_SECONDS"))
    # The dashboard: how often the page refreshes, how many organisations it counts per queue,
    # and how many limit groups it shows per queue partition (the latest pushed).
    dashboard_refresh_seconds: float = Field(2.0, gt=0, validation_alias=_env("REDISCHED_DASHBOARD_REFRESH_SECONDS"))
    dashboard_max_organisations: int = Field(50, ge=1, le=1000, validation_alias=_env("REDISCHED_DASHBOARD_MAX_ORGANISATIONS"))
    dashboard_max_limit_groups: int = Field(50, ge=1, le=1000, validation_alias=_env("REDISCHED_DASHBOARD_MAX_LIMIT_GROUPS"))
    # OpenTelemetry traces (the `otel` extra); also on when any OTEL_EXPORTER_* variable is set.
    otel: bool = Field(False, validation_alias=_env("REDISCHED_OTEL"))
    # Seconds between an API process's heartbeats (the dashboard's "API processes").
    heartbeat_seconds: float = Field(5.0, gt=0, validation_alias=_env("REDISCHED_HEARTBEAT_SECONDS"))

    @property
    def lease_running_seconds(self) -> int:
        return self.running_timeout if self.running_timeout is not None else self.pq_grace_period
