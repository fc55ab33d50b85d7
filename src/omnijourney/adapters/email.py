"""Email over real SMTP: MIME with subject, text and HTML, Message-ID from command_id,
one-click List-Unsubscribe."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import formatdate
from typing import TYPE_CHECKING

from omnijourney.core.commands import ChannelCommand
from omnijourney.core.redaction import scrub

if TYPE_CHECKING:
    from typing_extensions import Buffer  # smtplib's own annotation (typeshed)

from omnijourney.adapters.addresses import InvalidAddress, email_address, header_text
from omnijourney.adapters.protocols import Outcome, TransientError, Unconfirmed
from omnijourney.tracking.preferences import PreferenceLinks, preferences_link, with_preferences
from omnijourney.tracking.tokens import REPORT, REPORT_HEADER, UNSUBSCRIBE, make_token, track

# A signed List-Unsubscribe URL is one long word: at the default 78 columns the policy
# would RFC 2047-encode it, and no mail client reads a URL from an encoded word. SMTP's
# own limit is 998.
HEADERS_UNFOLDED = default_policy.clone(max_line_length=998)


@dataclass
class EmailChannel:
    host: str = "localhost"
    port: int = 25
    sender: str = "Northwind <hello@shop.example>"
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    unsubscribe_url: str = "https://shop.example/unsubscribe"
    preferences_url: str = "https://shop.example/preferences"  # without the tracking server
    domain: str = "omnijourney.local"
    timeout: float = 10.0
    tracking_url: str | None = None  # base of the click redirect (omnijourney clicks)
    tracking_secret: str = ""
    # Envelope sender (where relays send bounces: ``omnijourney bounces``); None: From.
    return_path: str | None = None
    name: str = "email"
    # SMTP has no idempotency key: the runner records each attempt before sending.
    provider_dedupes: bool = False

    def build(self, cmd: ChannelCommand) -> EmailMessage:
        """The message; InvalidAddress unless ``to`` is one plain addr-spec."""
        content = cmd.content
        msg = EmailMessage(policy=HEADERS_UNFOLDED)
        msg["From"] = self.sender
        msg["To"] = email_address(cmd.to)
        msg["Subject"] = header_text(content.get("subject", ""))
        # The same command always carries the same Message-ID, so a repeat is recognisable.
        msg["Message-ID"] = f"<{cmd.command_id}@{self.domain}>"
        msg["Date"] = formatdate(cmd.send_at.timestamp(), usegmt=True)
        if not cmd.transactional:
            # With the tracking server, one click (RFC 8058 POST) comes back as
            # email.unsubscribed and revokes consent; otherwise the shop's own page.
            token = make_token(self.tracking_secret, cmd, "", UNSUBSCRIBE)
            url = (f"{self.tracking_url.rstrip('/')}/u/{token}"
                   if self.tracking_url else f"{self.unsubscribe_url}/{cmd.command_id}")
            msg["List-Unsubscribe"] = f"<{url}>"
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if self.tracking_secret:
            # Comes back in bounces and complaints (RET=HDRS) so that they can be
            # attributed; signed, so that nobody can forge one.
            msg[REPORT_HEADER] = make_token(self.tracking_secret, cmd, "", REPORT)
        msg["X-Omnijourney-Command-Id"] = cmd.command_id
        msg["X-Omnijourney-Journey"] = f"{cmd.journey}/{cmd.step}"
        if content.get("preheader"):
            msg["X-Preheader"] = header_text(content["preheader"])
        text, html = content.get("text", ""), content.get("html")
        if not self.tracking_url or cmd.transactional:  # a template's own link, no footer
            links = PreferenceLinks(self.tracking_url, self.tracking_secret,
                                    self.preferences_url)
            text = links.fill(text, cmd)
            html = links.fill(html, cmd) if html else html
        if self.tracking_url and not cmd.transactional:
            text = track(text, cmd, self.tracking_url, self.tracking_secret, html=False)
            html = track(html, cmd, self.tracking_url, self.tracking_secret, html=True) \
                if html else html
            # Every marketing email carries the customer's preference page (not a
            # tracked click); signed as of the send time, so a repeat is the same mail.
            text, html = with_preferences(text, html, preferences_link(
                self.tracking_url, self.tracking_secret, cmd.customer_id, cmd.locale,
                cmd.send_at), cmd.locale)
        msg.set_content(text)
        if html:
            msg.add_alternative(html, subtype="html")
        return msg

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        try:
            msg = self.build(cmd)
        except InvalidAddress as exc:
            return Outcome("failed", reason=f"invalid address: {exc}")
        smtp: _TrackedSMTP | None = None
        try:
            with _TrackedSMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                options = (["RET=HDRS", f"ENVID={cmd.command_id}"]
                           if smtp.has_extn("dsn") else [])
                # The envelope names the one validated recipient; never read from headers.
                smtp.send_message(msg, from_addr=self.return_path, to_addrs=[cmd.to or ""],
                                  mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(400 <= c < 500 for c in codes):
                raise TransientError(f"recipient temporarily refused: {codes}") from None
            # A hard bounce at RCPT: the mailbox does not exist or refuses for good. The
            # engine marks the address, and sends nothing more to it.
            return Outcome("bounced", reason=f"recipient refused: {codes} "
                                             f"{scrub(_first_reply(exc.recipients))}")
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientError(f"SMTP {exc.smtp_code}") from None
            return Outcome("failed", reason=scrub(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"))
        except OSError as exc:  # refused, reset, timed out, disconnected mid-session
            if smtp is not None and smtp.body_sent:
                # The whole message was sent and no reply came: the server may well have
                # taken it. Retrying blindly is how one timeout became three copies.
                raise Unconfirmed(f"no reply after the message was sent: {exc}") from None
            raise TransientError(f"SMTP connection: {exc}") from None
        return Outcome("sent", provider_id=msg["Message-ID"])


class _TrackedSMTP(smtplib.SMTP):
    """Knows whether the message body went out in full (the data's final CRLF.CRLF)."""

    body_sent = False

    def send(self, s: Buffer | str) -> None:
        super().send(s)
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.body_sent = True


def _first_reply(recipients: dict[str, tuple[int, bytes]]) -> str:
    for _, reply in recipients.values():
        return reply.decode(errors="replace")[:200]
    return ""
