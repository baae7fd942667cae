"""The frozen values that flow between stages, by concern; ``harness.types`` re-exports them all."""
