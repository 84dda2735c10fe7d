"""tomoflow.register."""
