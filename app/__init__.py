"""llm-router: the composition root (config, app factory, tracing, CLI, shared state)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llm-router")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
