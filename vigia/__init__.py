"""vigia: a self-hosted observability stack as code."""

__version__ = "0.1.0"
