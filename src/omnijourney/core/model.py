"""The journey language as typed models (pydantic v2).

A journey is a typed graph: steps are a discriminated union on ``type`` and link by id.
When a step omits ``next`` it continues with the step listed after it; the last step ends.
These models check shape only; graph rules live in validation.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from omnijourney.core.channels import Channel, TemplateChannel
from omnijourney.core.identity import DEFAULT_MAX_PER_CUSTOMER, DEFAULT_MERGE_ON
from omnijourney.core.timeutil import ContactWindow, parse_duration, parse_time_of_day

ID_PATTERN = r"^[a-z][a-z0-9_\-]*$"
StepId = Annotated[str, Field(pattern=ID_PATTERN, description="a step id: lower_snake_case")]


def _check_duration(v: str) -> str:
    parse_duration(v)
    return v


def _check_offset(v: str) -> str:
    parse_duration(v.removeprefix("-"))
    return v  # keep the sign: "-1d" means the day before


def _check_tod(v: str) -> str:
    parse_time_of_day(v)
    return v


def _check_window(v: str) -> str:
    ContactWindow.parse(v)
    return v


def _check_re_entry(v: str) -> str:
    if v in ("never", "always"):
        return v
    if v.startswith("after "):
        parse_duration(v.removeprefix("after ").strip())
        return v
    raise ValueError("re_entry must be 'never', 'always' or 'after <duration>' (e.g. 'after 7d')")


Duration = Annotated[
    str | int,
    AfterValidator(lambda v: _check_duration(str(v))),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[wdhms])+$", "examples": ["2h", "7d"]}),
]
TimeOfDay = Annotated[
    str,
    AfterValidator(_check_tod),
    WithJsonSchema({"type": "string", "pattern": r"^\d{1,2}:\d{2}$", "examples": ["09:30"]}),
]
Window = Annotated[
    str,
    AfterValidator(_check_window),
    WithJsonSchema({"type": "string", "examples": ["09:00-21:00"]}),
]
ReEntry = Annotated[
    str,
    AfterValidator(_check_re_entry),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(never|always|after (\d+[wdhms])+)$",
         "examples": ["never", "always", "after 7d"]}
    ),
]
Condition = Annotated[str, Field(description="a CEL condition, e.g. profile.consent.sms == true")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Trigger(_Strict):
    event: str = Field(description="event type that starts the journey, e.g. cart.item_added")
    when: Condition | None = None
    correlate_by: str | None = Field(
        default=None,
        description="event property that keys one live instance per value (e.g. cart_id)",
    )


class Entry(_Strict):
    re_entry: ReEntry = "never"
    audience: Condition | None = Field(default=None, description="CEL condition on the profile")


class EventRule(_Strict):
    event: str
    when: Condition | None = None


class Goal(_Strict):
    event: str
    when: Condition | None = None
    within: Duration
    exit: bool = Field(default=False, description="end the journey when the goal is reached")


class _Step(_Strict):
    id: StepId
    description: str | None = None


class _Flow(_Step):
    next: StepId | None = None


class WaitStep(_Flow):
    type: Literal["wait"]
    duration: Duration | None = None
    until_local_time: TimeOfDay | None = Field(
        default=None, description="next occurrence of this local time in the customer's zone"
    )
    until: str | None = Field(
        default=None, description="Liquid giving an RFC 3339 time, e.g. {{ profile.birthday }}"
    )
    offset: Annotated[str, AfterValidator(_check_offset)] | None = Field(
        default=None, description="shift the time, e.g. -1d for the day before")
    if_missing: Literal["end", "continue"] = Field(
        default="end", description="when `until` gives no readable time: end the run "
        "(default) or go on at once")


class WaitForStep(_Flow):
    type: Literal["wait_for"]
    event: str | list[str]
    when: Condition | None = None
    timeout: Duration
    on_timeout: StepId | None = Field(default=None, description="where to go if nothing came")


class BranchCase(_Strict):
    when: Condition
    next: StepId


class BranchStep(_Step):
    type: Literal["branch"]
    branches: list[BranchCase] = Field(min_length=1)
    else_: StepId | None = Field(default=None, alias="else")


class Variant(_Strict):
    name: Annotated[str, Field(pattern=ID_PATTERN)]
    percent: Annotated[int, Field(ge=0, le=100)]
    next: StepId


class SplitStep(_Step):
    type: Literal["split"]
    variants: list[Variant] = Field(min_length=1)
    holdout: Annotated[int, Field(ge=0, le=100)] = 0


class SendStep(_Flow):
    type: Literal["send"]
    channel: Channel
    template: str | None = None
    audience: str | None = Field(default=None, description="ads only: the audience name")
    action: Literal["add", "remove"] = "add"
    data: dict[str, str] = Field(default_factory=dict, description="extra Liquid values")
    on_cap: Literal["skip", "defer"] = Field(
        default="skip", description="over the frequency cap: skip this send (default) or "
        "defer it until the cap allows one")
    topic: str | None = Field(
        default=None, description="the subscription topic this message belongs to (one "
        "of policies.yaml's topics): a marketing send needs the customer's consent to "
        "the channel and to the topic")


class UpdateProfileStep(_Flow):
    type: Literal["update_profile"]
    set: dict[str, str | int | float | bool | None] = Field(
        min_length=1, description="profile attribute -> a value, or Liquid giving one (a "
        "single {{ … }} that renders a number or true/false keeps that type)")


class WebhookStep(_Flow):
    type: Literal["webhook"]
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    body: str | dict[str, Any] | None = Field(
        default=None, description="a mapping (sent as JSON, every text in it rendered and "
        "escaped), or a text")
    headers: dict[str, str] = Field(default_factory=dict)


class GotoStep(_Step):
    type: Literal["goto"]
    next: StepId


class EndStep(_Step):
    type: Literal["end"]


class HandoffStep(_Flow):
    type: Literal["handoff"]
    url: str = Field(description="the helpdesk's endpoint (Liquid); the request is signed "
                     "like a webhook's and carries a callback URL for its answers")
    kind: Literal["conversation", "callback"] = Field(
        default="conversation", description="open a conversation with a person, or book a "
        "call-back slot inside the customer's contact window")
    lead: Duration = Field(default="1h", description="callback: the earliest a slot starts")
    duration: Duration = Field(default="30m", description="callback: the slot's length")
    context: list[str] = Field(
        default_factory=list, description="profile fields the person needs (first_name, "
        "phone, attributes.tier ...); only these leave with the request")
    save_slot_as: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*$", description="callback: keep the slot's "
        "start as this profile attribute, for later steps (a reminder before it)")
    headers: dict[str, str] = Field(default_factory=dict)


Step = Annotated[
    WaitStep | WaitForStep | BranchStep | SplitStep | SendStep | UpdateProfileStep
    | WebhookStep | HandoffStep | GotoStep | EndStep,
    Field(discriminator="type"),
]
STEP_TYPES = ("wait", "wait_for", "branch", "split", "send", "update_profile", "webhook",
              "handoff", "goto", "end")
WAITING_STEP_TYPES = frozenset({"wait", "wait_for"})


class JourneyDef(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: str | None = None
    description: str | None = None
    version: Annotated[int, Field(ge=1)] = 1
    priority: int = Field(default=0, description="when sends of several journeys compete "
                          "(the same moment, one cap): the higher goes first")
    exit_grace: Duration | None = Field(
        default=None, description="this journey's exit grace (default: the policies')")
    trigger: Trigger
    entry: Entry = Entry()
    exit_on: list[EventRule] = Field(default_factory=list)
    goal: Goal | None = None
    steps: list[Step] = Field(min_length=1)


class Defaults(_Strict):
    timezone: str = "UTC"
    contact_window: Window = "09:00-21:00"
    locale: str = "en"


class Cap(_Strict):
    max: Annotated[int, Field(ge=0)]
    per: Duration


ConsentMode = Literal["opt_in", "opt_out", "none"]


def _default_consent() -> dict[Channel, ConsentMode]:
    return {"email": "opt_in", "sms": "opt_in", "push": "opt_in", "ads": "opt_out",
            "webhook": "none"}


def _default_deadlines() -> dict[Channel, str | int]:
    return {"email": "24h", "sms": "4h", "push": "4h", "ads": "72h", "webhook": "24h"}


IdentifierFamily = Literal["loyalty_id", "email", "phone", "marketplace", "device_id",
                           "anonymous_id"]


class IdentityDef(_Strict):
    merge_on: list[IdentifierFamily] = Field(
        default_factory=lambda: list(DEFAULT_MERGE_ON),  # type: ignore[arg-type]
        description="identifier kinds that may show two customers to be one and merge "
        "them; a kind left out (device_id: a shared tablet, a family's computer) never does")
    max_per_customer: dict[IdentifierFamily, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict,
        description="at most this many identifiers of a kind per customer: a merge that "
        "would make more is refused (a store's generic email cannot glue its shoppers "
        f"into one); defaults {DEFAULT_MAX_PER_CUSTOMER}")


class TopicDef(_Strict):
    description: str | None = None
    channels: list[Channel] = Field(min_length=1, description="channels it may be sent on")
    default: Literal["opt_in", "opt_out"] = Field(
        default="opt_in", description="opt_in: only for customers who subscribed; opt_out: "
        "for everyone who has not unsubscribed from it")


class PoliciesDef(_Strict):
    defaults: Defaults = Defaults()
    identity: IdentityDef = IdentityDef()
    topics: dict[Annotated[str, Field(pattern=ID_PATTERN)], TopicDef] = Field(
        default_factory=dict, description="subscription topics (promotions, newsletter, "
        "order_updates ...): a send names one, and the customer chooses each on their "
        "preference page")
    exit_grace: Duration = Field(
        default="0s", description="how late (arriving after the wait ended) an exit or "
        "awaited event may be and still win: waits fire this long after they end")
    consent: dict[Channel, ConsentMode] = Field(
        default_factory=_default_consent,
        description="opt_in: needs consent granted; opt_out: allowed unless revoked",
    )
    frequency_caps: dict[Channel, Cap] = Field(default_factory=dict)
    transactional: list[str] = Field(
        default_factory=list,
        description="templates exempt from quiet hours, caps and consent (not from addresses)",
    )
    deadlines: dict[Channel, Duration] = Field(
        default_factory=_default_deadlines,
        description="how long after send_at an adapter may still deliver",
    )


class TemplateDef(_Strict):
    channel: TemplateChannel
    description: str | None = None
    default_locale: str = "en"
    locales: dict[str, dict[str, str]] = Field(min_length=1)
