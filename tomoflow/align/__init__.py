"""tomoflow.align."""
