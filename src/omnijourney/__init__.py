"""omnijourney: a Kafka-native engine for omnichannel customer journeys."""

__version__ = "0.1.0"
