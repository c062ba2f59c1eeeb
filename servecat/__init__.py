"""servecat: decide how to serve an LLM."""

__version__ = "0.1.0"
