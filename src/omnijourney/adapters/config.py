"""Each channel's provider, configured from the environment (``omnijourney adapter``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omnijourney.adapters.ads import AudienceSync
from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.push import FcmStylePush
from omnijourney.adapters.sms import TwilioStyleSms
from omnijourney.adapters.webhook import SignedWebhook
from omnijourney.tracking.preferences import PreferenceLinks


def channel_from_env(name: str) -> Any:
    """The channel implementation for ``name``, configured from the environment."""
    env = os.environ

    def need(key: str) -> str:
        if not env.get(key):
            raise SystemExit(f"omnijourney adapter {name}: set {key}")
        return env[key]

    # ``{{ links.preferences }}``: signed links to the tracking server's page when it
    # runs, else the shop's own preference page.
    links = PreferenceLinks(env.get("CLICK_TRACKING_URL"),
                            need("CLICK_SECRET") if env.get("CLICK_TRACKING_URL") else "",
                            env.get("OMNIJOURNEY_PREFERENCES_URL", PreferenceLinks.fallback))
    if name == "email":
        return EmailChannel(
            host=env.get("SMTP_HOST", "localhost"), port=int(env.get("SMTP_PORT", "25")),
            sender=env.get("SMTP_FROM", EmailChannel.sender),
            starttls=env.get("SMTP_STARTTLS", "").lower() in ("1", "true", "yes"),
            username=env.get("SMTP_USERNAME"), password=env.get("SMTP_PASSWORD"),
            unsubscribe_url=env.get("OMNIJOURNEY_UNSUBSCRIBE_URL", EmailChannel.unsubscribe_url),
            preferences_url=links.fallback,
            tracking_url=env.get("CLICK_TRACKING_URL"),
            # Signs tracked links and the header that lets bounces be attributed.
            tracking_secret=(need("CLICK_SECRET") if env.get("CLICK_TRACKING_URL")
                             else env.get("CLICK_SECRET", "")),
            return_path=env.get("EMAIL_RETURN_PATH"))
    if name == "sms":
        callback = env.get("SMS_STATUS_CALLBACK_URL")
        return TwilioStyleSms(need("SMS_API_BASE"), need("SMS_ACCOUNT_SID"),
                              need("SMS_AUTH_TOKEN"), need("SMS_FROM"),
                              status_callback=callback,
                              callback_secret=need("CLICK_SECRET") if callback else "",
                              links=links)
    if name == "push":
        return FcmStylePush(need("PUSH_API_BASE"), need("PUSH_PROJECT"), need("PUSH_TOKEN"),
                            links=links)
    if name == "webhook":
        # Hand-offs to a helpdesk carry a signed URL for its answers when the tracking
        # server runs (CLICK_TRACKING_URL, signed with CLICK_SECRET).
        return SignedWebhook(need("WEBHOOK_SECRET"), tracking_url=env.get("CLICK_TRACKING_URL"),
                             tracking_secret=(need("CLICK_SECRET")
                                              if env.get("CLICK_TRACKING_URL") else ""))
    if name == "ads":
        if not env.get("ADS_ENDPOINT") and not env.get("ADS_SINK"):
            raise SystemExit("omnijourney adapter ads: set ADS_ENDPOINT or ADS_SINK (a file)")
        return AudienceSync(endpoint=env.get("ADS_ENDPOINT"), token=env.get("ADS_TOKEN"),
                            sink=Path(env["ADS_SINK"]) if env.get("ADS_SINK") else None)
    raise SystemExit(f"omnijourney adapter: the {name} adapter is not built yet")
