"""The OCI vocabulary: digests, references, media types, platforms and documents. Pure."""
