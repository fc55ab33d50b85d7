"""Operations: consumer lag, Prometheus metrics, health endpoints."""
