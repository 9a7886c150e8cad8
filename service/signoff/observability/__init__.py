"""OpenTelemetry tracing and metrics for the signoff servers."""

from signoff.observability.telemetry import DecisionSpan, Telemetry

__all__ = ["DecisionSpan", "Telemetry"]
