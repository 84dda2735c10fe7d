"""tomoflow.recover."""
