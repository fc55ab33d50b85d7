"""End-to-end tests: the whole system as a user starts it (``omnijourney dev``)."""

from __future__ import annotations

from tests.logscan import no_address_in_any_log

__all__ = ["no_address_in_any_log"]  # autouse: the logs of every e2e test are scanned
