"""The Faust app's configuration: every setting that matters, and why."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from omnijourney.runtime.restore import STORE_URL
from omnijourney.settings import Settings


def credentials(settings: Settings) -> Any:
    sec = settings.security
    proto = sec.get("security_protocol", "PLAINTEXT").upper()
    if proto.startswith("SASL"):
        ctx = (ssl.create_default_context(cafile=sec.get("ssl_cafile"))
               if proto == "SASL_SSL" else None)
        return faust.SASLCredentials(username=sec.get("sasl_plain_username"),
                                     password=sec.get("sasl_plain_password"),
                                     mechanism=sec.get("sasl_mechanism", "PLAIN"),
                                     ssl_context=ctx)
    if proto == "SSL":
        return faust.SSLCredentials(ssl.create_default_context(cafile=sec.get("ssl_cafile")))
    return None


def faust_app(settings: Settings) -> faust.App:
    optional: dict[str, Any] = {"datadir": settings.datadir} if settings.datadir else {}
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap.split(",")],
        broker_credentials=credentials(settings),
        # Faust's memory store, restored in bulk (runtime/restore.py): a million
        # customers in seconds rather than minutes.
        store=STORE_URL,
        topic_partitions=settings.partitions,
        # Every topic, the table's changelog too, is created by ensure_topics (compacted,
        # replicated, retried while a broker is away); Faust's own creation asks one
        # broker, and a worker starting while that one is down crashed. No leader topic:
        # nothing here runs on the leader only.
        topic_allow_declare=False,
        topic_disable_leader=True,
        processing_guarantee="at_least_once",
        # No standby copies of the tables. A partition that becomes active is read whole
        # (runtime/restore.py: from its start or its snapshot file), and what a standby
        # holds of it is partial and dropped first, so a standby would buy nothing: yet
        # it reads every other worker's changelog into this one's memory. With two
        # workers that cost each 14 % more CPU per event (bench/live.py --scale).
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Each batch sends commands and per-customer changelog records, then waits for
        # the acks: a few ms of linger packs them into few requests instead of many.
        producer_linger=settings.producer_linger,
        producer_max_batch_size=settings.producer_batch_bytes,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(1.0, settings.session_timeout / 3),
        broker_max_poll_interval=settings.max_poll_interval,
        # Bounded fetches and stream buffer. aiokafka counts time spent handing a fetch
        # to the streams as idle, and an idle consumer past max.poll.interval leaves
        # its group; Faust then stops polling until the rebalance ends, which it
        # never does (the README's "An unexplained loss"). A backlog fetched whole
        # (tens of thousands of records at 1 MB a partition) took longer than that
        # to hand over; a batch at a time, with one more buffered, never does.
        broker_max_poll_records=settings.batch_size,
        stream_buffer_maxsize=2 * settings.batch_size,
        web_enabled=False,
        autodiscover=False,
        **optional,
    )
