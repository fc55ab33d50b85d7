"""The pure core: journey models, validation, expressions, templates and the evaluator.

No Kafka, no Faust, no clock reads, no I/O (tests/unit/test_purity.py enforces it).
"""

from omnijourney.core.catalog import JourneySet
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.evaluator import TICK, Evaluation, Tick, TraceEntry, evaluate
from omnijourney.core.events import Event, InvalidEvent, parse_event
from omnijourney.core.state import CustomerState

__all__ = [
    "TICK",
    "ChannelCommand",
    "CustomerState",
    "Evaluation",
    "Event",
    "InvalidEvent",
    "JourneySet",
    "Tick",
    "TraceEntry",
    "evaluate",
    "parse_event",
]
