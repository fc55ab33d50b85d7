"""A real local SMTP server (aiosmtpd) that records what it receives."""

from __future__ import annotations

import asyncio
import email
import threading
from email.message import Message
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from omnijourney.runtime.broker import free_port


class Recorder:
    def __init__(self, refuse: dict[str, str] | None = None, stall_at: int = 0,
                 stall_for: float = 5.0, stall_every: bool = False) -> None:
        self.messages: list[Message] = []
        self.senders: list[str] = []  # envelope sender (MAIL FROM) of each message
        self.recipients: list[list[str]] = []  # envelope recipients (RCPT TO) of each
        self.refuse = refuse or {}  # recipient -> SMTP reply, e.g. "550 no such user"
        # The stall_at-th message is stored at once but answered only seconds later, the
        # window in which a client crash duplicates mail (RFC 1047).
        # stall_every: every message from the stall_at-th on is answered late.
        self.stall_at, self.stall_for, self.stall_every = stall_at, stall_for, stall_every
        self.stalled = threading.Event()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        self.senders.append(envelope.mail_from)
        self.recipients.append(list(envelope.rcpt_tos))
        if self.stall_at and (len(self.messages) == self.stall_at
                              or (self.stall_every and len(self.messages) > self.stall_at)):
            self.stalled.set()
            await asyncio.sleep(self.stall_for)
        return "250 queued"


class SmtpServer:
    def __init__(self, refuse: dict[str, str] | None = None, stall_at: int = 0,
                 stall_for: float = 5.0, stall_every: bool = False) -> None:
        self.recorder = Recorder(refuse, stall_at, stall_for, stall_every)
        self.port = free_port()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)

    @property
    def messages(self) -> list[Message]:
        return self.recorder.messages

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.controller.stop()
