"""tomoflow.pipeline."""
