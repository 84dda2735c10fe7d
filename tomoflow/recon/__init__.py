"""tomoflow.recon."""
