"""tomoflow.models."""
