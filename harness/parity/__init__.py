"""Production parity: find why a model that passes offline fails in production.

``spec`` describes the offline and production pipelines the same way; ``pipeline`` renders,
tokenizes, samples and parses exactly as a described pipeline would; ``endpoint`` talks to a live
OpenAI-compatible server robustly; ``stage`` runs the parity checks (plugins) and collects their
findings.
"""
