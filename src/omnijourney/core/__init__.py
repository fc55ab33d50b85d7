"""The pure core: journey models, validation, expressions, templates and the evaluator.

No Kafka, no Faust, no clock reads, no I/O (tests/unit/test_purity.py enforces it).
"""

from omnijourney.core.catalog import JourneySet
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.evaluator import TICK, Evaluation, Tick, evaluate
from omnijourney.core.events import Event, InvalidEvent, parse_event
from omnijourney.core.state import CustomerState
from omnijourney.core.trace import TraceEntry, TraceKind

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
    "TraceKind",
    "evaluate",
    "parse_event",
]
