"""Every metric the system exports, in one catalogue (Prometheus text format).

Why one catalogue: dashboards, alerts and the ops page depend on exact names and labels; a
metric defined ad hoc in a module is a metric nobody can find. Lag metrics follow the common
exporters' names (``kafka_consumergroup_lag``, ``kafka_consumergroup_lag_seconds``) so existing
Grafana dashboards and alert rules work unchanged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EVENTS_PUBLISHED = Counter(
    "lpt_events_published_total",
    "Events published to Kafka",
    ["topic", "source"],
    registry=REGISTRY,
)
EVENTS_PROCESSED = Counter(
    "lpt_events_processed_total",
    "Events consumed and applied",
    ["group", "topic"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "lpt_events_duplicate_total",
    "Events recognised as duplicates and skipped",
    ["group", "topic"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "lpt_dead_letters_total",
    "Messages sent to a dead-letter topic",
    ["topic", "reason"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "lpt_processing_seconds",
    "Time to process one batch",
    ["group"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_DELAY_SECONDS = Histogram(
    "lpt_stream_stage_delay_seconds",
    "Time from the oldest message of a batch being produced to the stream stage taking it "
    "(summed over the stages: produce-to-table latency)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "kafka_consumergroup_lag",
    "Messages behind the end of the partition",
    ["consumergroup", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_LAG_SECONDS = Gauge(
    "kafka_consumergroup_lag_seconds",
    "Age of the oldest unconsumed message",
    ["consumergroup", "topic", "partition"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "lpt_notifications_total",
    "Notification outcomes per channel",
    ["channel", "status"],
    registry=REGISTRY,
)
GC_PAUSE_SECONDS = Histogram(
    "lpt_gc_pause_seconds",
    "Time the process stood still in Python's cyclic garbage collector, per collection",
    ["generation"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "lpt_http_request_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
IMPORT_ROWS = Counter(
    "lpt_import_rows_total",
    "Rows read by importers, by outcome",
    ["source", "outcome"],
    registry=REGISTRY,
)

# -- Operations (api/ops, lpt/metrics_server): computed by the web service on each scrape ------

TOPIC_OFFSET = Gauge(
    "kafka_topic_partition_current_offset",
    "End offset of each partition (rate() of it is the produce rate)",
    ["topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_OFFSET = Gauge(
    "kafka_consumergroup_current_offset",
    "Committed offset of each group on each partition (rate() of it is the consume rate)",
    ["consumergroup", "topic", "partition"],
    registry=REGISTRY,
)
DEAD_LETTER_MESSAGES = Gauge(
    "lpt_dead_letter_messages",
    "Messages held on each dead-letter topic (catalogue name of the original topic)",
    ["topic"],
    registry=REGISTRY,
)
DEAD_LETTER_REPLAYS = Counter(
    "lpt_dead_letter_replays_total",
    "Dead letters re-published to their original topic from the ops page",
    ["topic"],
    registry=REGISTRY,
)
KAFKA_UP = Gauge(
    "lpt_kafka_up",
    "1 when the last lag collection reached Kafka, 0 when it failed",
    registry=REGISTRY,
)
WORKER_UP = Gauge(
    "lpt_worker_up",
    "1 when a registered worker's heartbeat is fresh and its /metrics answered",
    ["worker", "kind"],
    registry=REGISTRY,
)
WORKER_HEARTBEAT_AGE = Gauge(
    "lpt_worker_heartbeat_age_seconds",
    "Seconds since each registered worker's last heartbeat",
    ["worker", "kind"],
    registry=REGISTRY,
)


def metric_names() -> set[str]:
    """Every sample name a scrape of the catalogue can contain (``_total``, ``_bucket``...).

    Dashboards and alert rules are checked against this set (tests/test_compose.py), so a
    renamed metric breaks a test rather than a panel.
    """
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.update(family.name + s for s in ("_total", "_created"))
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        else:
            names.add(family.name)
    return names
