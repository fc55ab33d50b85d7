"""``omnijourney worker`` with a fault planted where no record can reach on its own.

``FAIL_ON=store``: storing the state of customer ``c-crash`` raises ValueError (a bug
outside the Engine's per-record guards): the batch is handled record by record and that
record dead-lettered. ``FAIL_ON=kafka``: the same customer's batch raises a Kafka error,
as a cluster that cannot take writes does: the worker turns unhealthy, stops and exits
EXIT_FAILED. Everything else is the real worker.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from omnijourney.cli import main
from omnijourney.runtime.app import Worker

CUSTOMER = "c-crash"
real_store = Worker.store


async def planted_store(worker: Worker, states: dict[str, Any], *rest: Any) -> None:
    if CUSTOMER in states:
        if os.environ.get("FAIL_ON") == "kafka":
            raise KafkaTimeoutError("planted: the cluster does not answer")
        raise ValueError("planted: a bug no record should be able to trigger")
    await real_store(worker, states, *rest)


Worker.store = planted_store  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["worker"]))
