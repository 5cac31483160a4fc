"""Which scheme and TLS policy a registry host gets (DESIGN.md section 4).

Loopback hosts (localhost, 127.0.0.0/8, ::1) speak plain HTTP unless the host is configured
with `insecure: false` or a `ca_file`; every other host speaks HTTPS with verification unless
configured `insecure: true`. There is never a silent fallback from HTTPS to HTTP.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

# Docker Hub's API lives on another host than the name users write.
_API_HOSTS = {"docker.io": "registry-1.docker.io"}


@dataclass(frozen=True)
class RegistryOptions:
    insecure: bool | None = None
    ca_file: Path | None = None
    # Upload blobs in PATCH chunks of this many bytes (for proxies that cap request bodies).
    chunk_size: int | None = None
    # Our request budget for the host (budget.py): requests a second, and how many may go at
    # once after a quiet spell. None: no budget of ours (the server's RateLimit still counts).
    requests_per_second: float | None = None
    burst: int | None = None


@dataclass(frozen=True)
class TransportPolicy:
    host: str
    scheme: str
    ca_file: Path | None
    chunk_size: int | None = None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{_API_HOSTS.get(self.host, self.host)}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.scheme == "http":
            return False
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return True


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def policy_for(host: str, options: RegistryOptions | None = None) -> TransportPolicy:
    options = options or RegistryOptions()
    if options.insecure is True:
        return TransportPolicy(host, "http", None, options.chunk_size)
    if options.insecure is None and options.ca_file is None and is_loopback(host):
        return TransportPolicy(host, "http", None, options.chunk_size)
    return TransportPolicy(host, "https", options.ca_file, options.chunk_size)
