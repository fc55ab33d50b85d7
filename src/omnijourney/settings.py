"""Runtime settings from the environment (and CLI flags), with SASL/TLS passthrough."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from omnijourney.core.channels import CHANNELS


@dataclass(frozen=True)
class Topics:
    touchpoints: str = "touchpoints"
    ticks: str = "omnijourney-ticks"  # internal: timer ticks
    deliveries: str = "deliveries"
    dlq: str = "dlq"
    command_prefix: str = "commands."
    delivered_prefix: str = "omnijourney-delivered."  # adapters' record of sent command ids
    # internal: events on their way through their identifiers' partitions (keyed by
    # identifier), then identified events and merge messages (keyed by customer)
    identity: str = "omnijourney-identity"
    identified: str = "omnijourney-identified"

    def command(self, channel: str) -> str:
        return f"{self.command_prefix}{channel}"

    def delivered(self, channel: str) -> str:
        return f"{self.delivered_prefix}{channel}"

    @property
    def commands(self) -> list[str]:
        return [self.command(ch) for ch in CHANNELS]

    @classmethod
    def with_prefix(cls, prefix: str) -> Topics:
        """Every topic under one prefix (tests, several environments on one cluster)."""
        return cls(**{f.name: f"{prefix}{f.default}" for f in fields(cls)})


def _flag(value: str | None, name: str) -> bool:
    """An on/off setting: 1/true/yes/on or 0/false/no/off (unset: off)."""
    text = (value or "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (true/false, yes/no, on/off)")


def adapter_group(settings: Settings, channel: str) -> str:
    """The consumer group of a channel's adapters."""
    return f"{settings.app_id}-adapter-{channel}"


class ClockMode(StrEnum):
    """Whose time the engine runs on."""

    WALL = "wall"  # production: the machine's clock
    EVENT = "event"  # replays, ``dev`` and tests: time follows the events read


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "omnijourney"
    partitions: int = 8
    topics: Topics = field(default_factory=Topics)
    journeys: str = "journeys"
    clock: ClockMode = ClockMode.WALL
    # How often the timer looks for due waits: their lateness is about this at most. A
    # look with nothing due costs one heap peek per partition (bench/scale.py), so a
    # short interval is cheap; at 1 s the lateness p99 was 1.1 s, at 0.25 s 0.45 s
    # (bench/herd.py, waits spread out).
    tick_interval: float = 0.25
    # Seconds ahead of their due time that waiting customers' states are decoded into
    # the state cache, while the worker has nothing due to hand out (``Worker.warm``):
    # a herd due in one second then finds its states read (0: off).
    warm_ahead: float = 60.0
    batch_size: int = 500
    # A batch closes when full, when nothing more waits on the stream, or this many
    # seconds after its first event (runtime/batching.py).
    batch_window: float = 0.05
    # One line per batch with where its time went, at info (else at debug only).
    batch_log: bool = False
    replication: int | None = None  # None: min(3, brokers)
    extra_event_types: tuple[str, ...] = ()
    # Kafka's own consumer defaults. A worker killed without leaving its group holds its
    # partitions until the session times out; shorter means faster failover, more
    # sensitivity to pauses.
    # Seconds the producer waits to gather more sends. The worker waits for its acks as
    # soon as a batch's sends are all handed over, so a linger only delays them: at
    # 2,000 events/s p99 latency 141 -> 75 ms with 0, and the drain was faster too.
    producer_linger: float = 0.0
    # The most bytes of one partition's records in one produce request. The producer
    # keeps one request in flight per broker, with one batch per partition in it, so a
    # batch's states (2 kB each, ~60 a partition) took a round trip per 16 kB with
    # Faust's default: a herd's 100k ticks 19.7 -> 16.7 s (bench/herd.py).
    producer_batch_bytes: int = 512 * 1024
    # How long the broker may hold a fetch that finds nothing new (Faust asks 1.5 s).
    fetch_wait: float = 0.05  # seconds
    # Records handed to the streams without four tasks each (runtime/faustguard.py, 5).
    fast_delivery: bool = True
    session_timeout: float = 45.0
    max_poll_interval: float = 300.0
    # A table restore that makes no progress this long stops the worker with
    # EXIT_STALLED, for its supervisor to start it again (0: wait forever).
    recovery_stall: float = 120.0
    # Seconds a batch is retried through the cluster's errors (a broker restarting)
    # before the worker fails with EXIT_FAILED for its supervisor.
    cluster_patience: float = 60.0
    security: dict[str, str] = field(default_factory=dict)
    datadir: str | None = None  # Faust's local directory (default: <app_id>-data here)
    # /metrics, /healthz, /readyz: loopback unless told (a container: 0.0.0.0); with a
    # token, /metrics wants "Authorization: Bearer <token>".
    metrics_host: str = "127.0.0.1"
    metrics_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        prefix = env.get("OMNIJOURNEY_TOPIC_PREFIX", "")
        values: dict[str, Any] = {
            "bootstrap": env.get("KAFKA_BOOTSTRAP", cls.bootstrap),
            "app_id": env.get("OMNIJOURNEY_APP_ID", cls.app_id),
            "partitions": int(env.get("OMNIJOURNEY_PARTITIONS", cls.partitions)),
            "topics": Topics.with_prefix(prefix) if prefix else Topics(),
            "journeys": env.get("OMNIJOURNEY_JOURNEYS", cls.journeys),
            "clock": env.get("OMNIJOURNEY_CLOCK", cls.clock),
            "extra_event_types": tuple(
                t.strip() for t in env.get("OMNIJOURNEY_EXTRA_EVENT_TYPES", "").split(",")
                if t.strip()),
            "session_timeout": float(env.get("OMNIJOURNEY_SESSION_TIMEOUT", cls.session_timeout)),
            "max_poll_interval": float(env.get("OMNIJOURNEY_MAX_POLL_INTERVAL",
                                               cls.max_poll_interval)),
            "recovery_stall": float(env.get("OMNIJOURNEY_RECOVERY_STALL", cls.recovery_stall)),
            "tick_interval": float(env.get("OMNIJOURNEY_TICK_INTERVAL", cls.tick_interval)),
            "warm_ahead": float(env.get("OMNIJOURNEY_WARM_AHEAD", cls.warm_ahead)),
            "cluster_patience": float(env.get("OMNIJOURNEY_CLUSTER_PATIENCE",
                                              cls.cluster_patience)),
            "batch_size": int(env.get("OMNIJOURNEY_BATCH_SIZE", cls.batch_size)),
            "batch_window": float(env.get("OMNIJOURNEY_BATCH_WINDOW", cls.batch_window)),
            "batch_log": _flag(env.get("OMNIJOURNEY_BATCH_LOG"), "OMNIJOURNEY_BATCH_LOG"),
            "producer_linger": float(env.get("OMNIJOURNEY_PRODUCER_LINGER",
                                             cls.producer_linger)),
            "producer_batch_bytes": int(env.get("OMNIJOURNEY_PRODUCER_BATCH_BYTES",
                                                cls.producer_batch_bytes)),
            "fetch_wait": float(env.get("OMNIJOURNEY_FETCH_WAIT", cls.fetch_wait)),
            "fast_delivery": _flag(env.get("OMNIJOURNEY_FAST_DELIVERY", "1"),
                                   "OMNIJOURNEY_FAST_DELIVERY"),
            "datadir": env.get("OMNIJOURNEY_DATADIR") or None,
            "metrics_host": env.get("OMNIJOURNEY_METRICS_HOST", cls.metrics_host),
            "metrics_token": env.get("OMNIJOURNEY_METRICS_TOKEN") or None,
            "replication": int(env["OMNIJOURNEY_REPLICATION"])
            if env.get("OMNIJOURNEY_REPLICATION") else None,
            "security": {k: v for k, v in {
                "security_protocol": env.get("KAFKA_SECURITY_PROTOCOL"),
                "sasl_mechanism": env.get("KAFKA_SASL_MECHANISM"),
                "sasl_plain_username": env.get("KAFKA_SASL_USERNAME"),
                "sasl_plain_password": env.get("KAFKA_SASL_PASSWORD"),
                "ssl_cafile": env.get("KAFKA_SSL_CAFILE"),
            }.items() if v},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not 1 <= values["batch_size"] <= 100_000:
            raise ValueError("OMNIJOURNEY_BATCH_SIZE must be a number of records, 1 to 100000")
        if not 0 < values["batch_window"] <= 10:
            raise ValueError("OMNIJOURNEY_BATCH_WINDOW must be above 0 and at most 10 seconds")
        if not 0 <= values["producer_linger"] <= 1:
            raise ValueError("OMNIJOURNEY_PRODUCER_LINGER must be 0 to 1 seconds")
        if not 1024 <= values["producer_batch_bytes"] <= 1_000_000:
            # A batch is one record batch on the broker: over its max.message.bytes
            # (1 MB unless raised), the broker refuses it whole.
            raise ValueError("OMNIJOURNEY_PRODUCER_BATCH_BYTES must be 1024 to 1000000 bytes")
        if not 0 <= values["fetch_wait"] <= 5:
            raise ValueError("OMNIJOURNEY_FETCH_WAIT must be 0 to 5 seconds")
        if not values["tick_interval"] > 0:
            raise ValueError("OMNIJOURNEY_TICK_INTERVAL must be a positive number of seconds")
        if not 0 <= values["warm_ahead"] <= 86_400:
            raise ValueError("OMNIJOURNEY_WARM_AHEAD must be 0 to 86400 seconds")
        if values["clock"] not in tuple(ClockMode):
            raise ValueError("OMNIJOURNEY_CLOCK must be 'wall' or 'event'")
        values["clock"] = ClockMode(values["clock"])
        return cls(**values)

    def kafka_python(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients (admin, CLI tools, lag)."""
        return {"bootstrap_servers": self.bootstrap.split(","), **self.security}
