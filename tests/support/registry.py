"""The registry process and its access log, shared with the bench: see devsupport.registry."""

from devsupport.registry import REGISTRY_BINARY, Registry, Request, start_registry

__all__ = ["REGISTRY_BINARY", "Registry", "Request", "start_registry"]
