"""tomoflow.sim."""
