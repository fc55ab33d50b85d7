"""omnijourney: a Kafka-native engine for omnichannel customer journeys."""

from omnijourney.native import guard as _guard

__version__ = "0.1.0"

# The core's compiled modules run only when current (omnijourney/native.py).
_guard()
