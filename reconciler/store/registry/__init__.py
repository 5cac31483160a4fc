"""Talking to registries: transport policy, authentication, and the HTTP client."""
