"""The one settings module: every tunable comes from an ``LPT_*`` environment variable.

Why one module: operators need a single table of knobs (the README's configuration table is
generated from ``Settings.describe()``), and tests override settings by environment only, so a
test can never configure something a real deployment cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Gateway key available only in demo mode (LPT_DEMO=1, set by `make run`), never otherwise.
DEMO_INGEST_KEY = "demo-only-not-for-production"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _api_keys(raw: str) -> dict[str, str]:
    """Parse ``system1:key1,system2:key2`` into ``{key: system}``."""
    keys: dict[str, str] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        system, sep, key = part.partition(":")
        if not sep or not system or not key:
            raise ValueError(f"LPT_INGEST_API_KEYS entry {part!r} must look like system:key")
        keys[key] = system
    return keys


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field metadata ``env`` names the variable, ``doc`` explains it."""

    home: Path = field(
        metadata={"env": "LPT_HOME", "doc": "State directory (Kafka, PostgreSQL, logs, pids)"}
    )
    kafka_bootstrap: str = field(
        metadata={
            "env": "LPT_KAFKA_BOOTSTRAP",
            "doc": "Kafka bootstrap servers; empty = run local Kafka",
        }
    )
    kafka_port: int = field(
        metadata={"env": "LPT_KAFKA_PORT", "doc": "Port of the local Kafka broker"}
    )
    kafka_controller_port: int = field(
        metadata={"env": "LPT_KAFKA_CONTROLLER_PORT", "doc": "Port of the local KRaft controller"}
    )
    database_url: str = field(
        metadata={"env": "LPT_DATABASE_URL", "doc": "PostgreSQL URL; empty = run local PostgreSQL"}
    )
    pg_port: int = field(
        metadata={"env": "LPT_PG_PORT", "doc": "Port of the local PostgreSQL cluster"}
    )
    http_host: str = field(metadata={"env": "LPT_HTTP_HOST", "doc": "Web service bind address"})
    http_port: int = field(metadata={"env": "LPT_HTTP_PORT", "doc": "Web service port"})
    data_dir: Path = field(
        metadata={
            "env": "LPT_DATA_DIR",
            "doc": "Reference and sample data (police.uk, postcodes, IMD, Census)",
        }
    )
    force_name: str = field(
        metadata={"env": "LPT_FORCE_NAME", "doc": "The force whose tables are built"}
    )
    force_boundary: Path = field(
        metadata={
            "env": "LPT_FORCE_BOUNDARY",
            "doc": "GeoJSON of the force area (default: shipped Humberside)",
        }
    )
    topic_prefix: str = field(
        metadata={"env": "LPT_TOPIC_PREFIX", "doc": "Prefix of every Kafka topic name"}
    )
    topic_partitions: int = field(
        metadata={"env": "LPT_TOPIC_PARTITIONS", "doc": "Partitions of the input topics"}
    )
    ingest_api_keys: dict[str, str] = field(
        metadata={"env": "LPT_INGEST_API_KEYS", "doc": "Gateway keys, system:key,system:key"}
    )
    max_request_bytes: int = field(
        metadata={"env": "LPT_MAX_REQUEST_BYTES", "doc": "Largest accepted HTTP request body"}
    )
    max_batch_events: int = field(
        metadata={"env": "LPT_MAX_BATCH_EVENTS", "doc": "Most events in one gateway batch"}
    )
    log_format: str = field(
        metadata={"env": "LPT_LOG_FORMAT", "doc": "json (production) or console"}
    )
    log_level: str = field(metadata={"env": "LPT_LOG_LEVEL", "doc": "Log level"})
    demo_mode: bool = field(
        metadata={"env": "LPT_DEMO", "doc": "Seed demo accounts (local use only)"}
    )
    stream_workers: int = field(
        metadata={"env": "LPT_STREAM_WORKERS", "doc": "Stream workers started by lpt up"}
    )
    stream_app_id: str = field(
        metadata={
            "env": "LPT_STREAM_APP_ID",
            "doc": "Stream workers' Faust app id = consumer group; empty = <prefix>streams",
        }
    )
    stream_input_batch: int = field(
        metadata={
            "env": "LPT_STREAM_INPUT_BATCH",
            "doc": "Input records a stream worker reads and forwards per batch",
        }
    )
    stream_child_nice: int = field(
        metadata={
            "env": "LPT_STREAM_CHILD_NICE",
            "doc": "CPU priority offset (nice) of a stream worker's input and scorer children",
        }
    )
    master_key_file: Path = field(
        metadata={
            "env": "LPT_MASTER_KEY_FILE",
            "doc": "Master key wrapping per-person keys (created if missing)",
        }
    )
    link_key_file: Path = field(
        metadata={
            "env": "LPT_LINK_KEY_FILE",
            "doc": "Key signing residents' unsubscribe links; survives master-key rotation "
            "(created if missing)",
        }
    )
    survey_auto_waves: bool = field(
        metadata={
            "env": "LPT_SURVEY_AUTO_WAVES",
            "doc": "Notification worker opens each quarter's survey wave by itself (0 = off)",
        }
    )
    score_change_threshold: float = field(
        metadata={
            "env": "LPT_SCORE_CHANGE_THRESHOLD",
            "doc": "Score move that emits priority.changed",
        }
    )
    public_url: str = field(
        metadata={
            "env": "LPT_PUBLIC_URL",
            "doc": "Public https address of the web pages, for links in messages (empty = base URL)",
        }
    )
    smtp_url: str = field(
        metadata={
            "env": "LPT_SMTP_URL",
            "doc": "Mail server, smtp://[user:pass@]host:port (smtps:// TLS, ?starttls=1)",
        }
    )
    mail_from: str = field(metadata={"env": "LPT_MAIL_FROM", "doc": "From address of e-mails"})
    smtp_connections: int = field(
        metadata={"env": "LPT_SMTP_CONNECTIONS", "doc": "Concurrent SMTP connections per worker"}
    )
    sms_url: str = field(
        metadata={"env": "LPT_SMS_URL", "doc": "SMS provider endpoint (HTTP POST); empty = off"}
    )
    push_url: str = field(
        metadata={"env": "LPT_PUSH_URL", "doc": "Push provider endpoint (HTTP POST); empty = off"}
    )
    metrics_host: str = field(
        metadata={"env": "LPT_METRICS_HOST", "doc": "Bind address of each worker's /metrics"}
    )
    metrics_port: int = field(
        metadata={
            "env": "LPT_METRICS_PORT",
            "doc": "Port of each worker's /metrics; 0 = any free port",
        }
    )
    ops_token: str = field(
        metadata={
            "env": "LPT_OPS_TOKEN",
            "doc": "Bearer token for the ops page and replay API; empty = admin login only",
        }
    )
    tile_url: str = field(
        metadata={
            "env": "LPT_TILE_URL",
            "doc": "Map tile URL template ({z}/{x}/{y}) for the officer map; empty = no tiles, "
            "force and local-authority boundaries as the base layer",
        }
    )
    cookie_secure: bool = field(
        metadata={
            "env": "LPT_COOKIE_SECURE",
            "doc": "Officer session cookies only over https (set 0 for plain http on localhost)",
        }
    )

    @property
    def local_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def local_postgres(self) -> bool:
        return not self.database_url

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def dsn(self) -> str:
        return self.database_url or f"postgresql://lpt@127.0.0.1:{self.pg_port}/lpt"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def public_base_url(self) -> str:
        """Where residents' links point (unsubscribe, reply): the public address if given."""
        return (self.public_url or self.base_url).rstrip("/")

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(_env("LPT_HOME", str(PROJECT_ROOT / ".lpt"))).resolve()
        demo = _env("LPT_DEMO", "0") in ("1", "true", "yes")
        api_keys = _api_keys(_env("LPT_INGEST_API_KEYS", ""))
        if demo and not api_keys:
            # Local demo only: a well-known key so the gateway can be tried from the README.
            api_keys = {DEMO_INGEST_KEY: "demo-crime-system"}
        return cls(
            home=home,
            kafka_bootstrap=_env("LPT_KAFKA_BOOTSTRAP", ""),
            kafka_port=_env_int("LPT_KAFKA_PORT", 19092),
            kafka_controller_port=_env_int("LPT_KAFKA_CONTROLLER_PORT", 19093),
            database_url=_env("LPT_DATABASE_URL", ""),
            pg_port=_env_int("LPT_PG_PORT", 15432),
            http_host=_env("LPT_HTTP_HOST", "127.0.0.1"),
            http_port=_env_int("LPT_HTTP_PORT", 8080),
            data_dir=Path(_env("LPT_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "data"))),
            force_name=_env("LPT_FORCE_NAME", "Humberside Police"),
            force_boundary=Path(
                _env(
                    "LPT_FORCE_BOUNDARY",
                    str(PROJECT_ROOT / "lpt" / "data" / "humberside_force_area.geojson"),
                )
            ),
            topic_prefix=_env("LPT_TOPIC_PREFIX", "lpt."),
            topic_partitions=_env_int("LPT_TOPIC_PARTITIONS", 6),
            ingest_api_keys=api_keys,
            max_request_bytes=_env_int("LPT_MAX_REQUEST_BYTES", 5 * 1024 * 1024),
            max_batch_events=_env_int("LPT_MAX_BATCH_EVENTS", 5000),
            log_format=_env("LPT_LOG_FORMAT", "json"),
            log_level=_env("LPT_LOG_LEVEL", "info"),
            demo_mode=demo,
            stream_workers=_env_int("LPT_STREAM_WORKERS", 1),
            stream_app_id=_env("LPT_STREAM_APP_ID", ""),
            stream_input_batch=_env_int("LPT_STREAM_INPUT_BATCH", 20_000),
            stream_child_nice=_env_int("LPT_STREAM_CHILD_NICE", 5),
            master_key_file=Path(_env("LPT_MASTER_KEY_FILE", str(home / "secrets" / "master.key"))),
            link_key_file=Path(_env("LPT_LINK_KEY_FILE", str(home / "secrets" / "link.key"))),
            survey_auto_waves=_env("LPT_SURVEY_AUTO_WAVES", "1") not in ("0", "false", "no"),
            score_change_threshold=_env_float("LPT_SCORE_CHANGE_THRESHOLD", 0.1),
            public_url=_env("LPT_PUBLIC_URL", ""),
            smtp_url=_env("LPT_SMTP_URL", "smtp://127.0.0.1:1025"),
            mail_from=_env("LPT_MAIL_FROM", "Local Priority Targeting <no-reply@localhost>"),
            smtp_connections=_env_int("LPT_SMTP_CONNECTIONS", 8),
            sms_url=_env("LPT_SMS_URL", ""),
            push_url=_env("LPT_PUSH_URL", ""),
            tile_url=_env("LPT_TILE_URL", ""),
            cookie_secure=_env("LPT_COOKIE_SECURE", "0" if demo else "1")
            not in ("0", "false", "no"),
            metrics_host=_env("LPT_METRICS_HOST", "127.0.0.1"),
            metrics_port=_env_int("LPT_METRICS_PORT", 0),
            ops_token=_env("LPT_OPS_TOKEN", ""),
        )

    @classmethod
    def describe(cls) -> list[tuple[str, str]]:
        """(variable, explanation) for every setting, for docs and ``lpt config``."""
        return [(f.metadata["env"], f.metadata["doc"]) for f in fields(cls)]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
