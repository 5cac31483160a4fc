"""Test helpers: real registries, offline-built images, independent witnesses (skopeo)."""
