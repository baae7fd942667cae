"""Built-in parity checks: compare the offline evaluation pipeline with production."""
