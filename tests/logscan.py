"""The README's promise, checked after every integration and end-to-end test: the logs a
worker, adapter or server wrote hold digests, never a customer's address."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Addresses the suite's customers have (examples/events.jsonl, omnijourney.synthetic and
# the tests' own): none may appear in any log a worker, adapter or server wrote.
_ADDRESS = re.compile(rb"[A-Za-z0-9._%+-]+@example\.(?:com|org)|\+(?:1555|49151|44163)[0-9]{4,}")


@pytest.fixture(autouse=True)
def no_address_in_any_log(tmp_path: Path) -> Iterator[None]:
    """After each test that uses it: every log under its directory holds digests, never a
    customer's email address or phone number (the README's promise)."""
    yield
    found = []
    for path in tmp_path.rglob("*.log"):
        text = path.read_bytes()
        for m in _ADDRESS.finditer(text):
            found.append(f"{path.relative_to(tmp_path)}: {m.group(0).decode()} in "
                         f"{text[max(0, m.start() - 120):m.end() + 40].decode(errors='replace')!r}")
    assert not found, "addresses in clear:\n" + "\n".join(found[:10])
