"""reconciler: a GitOps reconciler for container images."""

__version__ = "0.1.0"
