"""HTTP provider plumbing shared by the SMS, push and webhook adapters."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from omnijourney import wallclock
from omnijourney.adapters.protocols import Outcome, TransientError


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return {}


def request(method: str, url: str, *, body: bytes, headers: dict[str, str],
            timeout: float) -> Response:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), _read(resp))
    except urllib.error.HTTPError as exc:
        try:
            return Response(exc.code, dict(exc.headers.items()), _read(exc))
        except (http.client.HTTPException, OSError):
            return Response(exc.code, dict(exc.headers.items()), b"")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise TransientError(f"{method} {_where(url)}: {getattr(exc, 'reason', exc)}") from None
    except http.client.HTTPException as exc:
        # A truncated or garbled reply (IncompleteRead, BadStatusLine, a header flood):
        # the provider's trouble, worth another try (the idempotency key keeps it single).
        raise TransientError(f"{method} {_where(url)}: broken reply "
                             f"({type(exc).__name__})") from None


MAX_REPLY_BYTES = 1024 * 1024  # a provider's answer is small; more is not read


def _read(resp: Any) -> bytes:
    """The whole body (a short one raises IncompleteRead), and never more than
    MAX_REPLY_BYTES of it."""
    length = resp.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) <= MAX_REPLY_BYTES:
        return bytes(resp.read())
    return bytes(resp.read(MAX_REPLY_BYTES))


def _where(url: str) -> str:
    """The URL without its query (where tokens and numbers may sit)."""
    return url.split("?", 1)[0]


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - wallclock.now().timestamp())
    except (TypeError, ValueError):
        return None


def check(resp: Response, what: str) -> Response:
    """2xx passes; 408, 429 and 5xx are worth retrying; any other status is final."""
    if 200 <= resp.status < 300:
        return resp
    detail = resp.body[:200].decode(errors="replace")
    if resp.status in (408, 429) or resp.status >= 500:
        raise TransientError(f"{what}: HTTP {resp.status} {detail}",
                             retry_after=retry_after(resp.headers.get("Retry-After")))
    raise PermanentError(f"{what}: HTTP {resp.status} {detail}", resp.status, resp.body)


class PermanentError(Exception):
    """The provider refused for good (bad number, unregistered token, 4xx)."""

    def __init__(self, reason: str, status: int, body: bytes) -> None:
        super().__init__(reason)
        self.status, self.body = status, body


def call(method: str, url: str, *, body: bytes, headers: dict[str, str], timeout: float,
         what: str,
         address_gone: Callable[[int, bytes], bool] | None = None) -> Response | Outcome:
    """One provider request: the 2xx response, or a ``failed`` Outcome when the provider
    refused for good (``bounced`` when ``address_gone`` says the refusal means the
    address itself is dead); transient trouble raises TransientError for the retry loop."""
    try:
        return check(request(method, url, body=body, headers=headers, timeout=timeout), what)
    except PermanentError as exc:
        dead = address_gone is not None and address_gone(exc.status, exc.body)
        return Outcome("bounced" if dead else "failed", reason=str(exc))


@dataclass
class TokenBucket:
    """At most ``rate`` requests a second on average, bursts up to ``burst``."""

    rate: float
    burst: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _tokens: float = field(default=-1.0, init=False)
    _at: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the time slept."""
        with self._lock:
            now = self.clock()
            if self._tokens < 0:
                self._tokens, self._at = self.burst, now
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if wait:
                self.sleep(wait)
                self._tokens += wait * self.rate
                self._at = now + wait
            self._tokens -= 1
            return wait
