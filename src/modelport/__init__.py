"""modelport: a self-hosted gateway for LLM model deployments."""

__version__ = "0.1.0"
