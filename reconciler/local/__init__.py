"""Local image stores: OCI layouts and docker-save archives."""
