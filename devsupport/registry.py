"""Start Debian's docker-registry (distribution 2.8) as a plain process on a free loopback port.

The access log (combined log format, on the process's output) is the independent count of the
requests reconciler sends.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BINARY = "docker-registry"
SENTINEL_PREFIX = "/v2/reconciler-sentinel-"
SENTINEL_TIMEOUT = 10.0
_LISTENING = re.compile(r"listening on (?:\[?[0-9a-f.:]+\]?):([0-9]+)")
_ACCESS = re.compile(
    r'^\S+ - \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>[0-9]{3}) '
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int


class Registry:
    def __init__(self, root: Path, extra_config: str = "") -> None:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise RuntimeError(
                f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry); "
                "the suite needs a real registry and does not skip"
            )
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            "  delete:\n    enabled: true\n"
            "http:\n  addr: 127.0.0.1:0\n  secret: reconciler-tests\n" + extra_config
        )
        self.log_path = root / "registry.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        self.port = self._wait_for_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = "tls:" in extra_config
        self._sentinels = 0

    def _wait_for_port(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"docker-registry did not start: {self.log_path.read_text(errors='replace')[-2000:]}"
        )

    def mark(self) -> int:
        """A position in the access log; `requests(since=mark)` reads what came after."""
        self._log.flush()
        return self.log_path.stat().st_size

    def requests(self, since: int = 0, until: int | None = None) -> list[Request]:
        """The requests logged after `since` (a `mark()`): up to `until`, or else up to a
        sentinel request sent now, so that every earlier request's line has been written."""
        if until is None:
            sentinel = self._send_sentinel()
            deadline = time.monotonic() + SENTINEL_TIMEOUT
            while True:
                found = self._read(since, None)
                if any(r.path == sentinel for r in found):
                    return [r for r in found[: [r.path for r in found].index(sentinel)]
                            if not r.path.startswith(SENTINEL_PREFIX)]  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the sentinel {sentinel} never reached {self.log_path}")
                time.sleep(0.01)  # polling for the sentinel's own line, not a fixed wait
        return [r for r in self._read(since, until) if not r.path.startswith(SENTINEL_PREFIX)]

    def _read(self, since: int, until: int | None) -> list[Request]:
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            raw = handle.read() if until is None else handle.read(until - since)
            text = raw.decode(errors="replace")
        out = []
        for line in text.splitlines():
            match = _ACCESS.match(line)
            if match:
                out.append(Request(match["method"], match["path"], int(match["status"])))
        return out

    def _send_sentinel(self) -> str:
        self._sentinels += 1
        path = f"{SENTINEL_PREFIX}{os.getpid()}-{self._sentinels}/tags/list"
        scheme = "https" if self.tls else "http"
        context = ssl._create_unverified_context() if self.tls else None  # noqa: S323 - a test CA
        try:
            with urllib.request.urlopen(  # noqa: S310 - a loopback URL we built
                f"{scheme}://{self.host}{path}", timeout=SENTINEL_TIMEOUT, context=context
            ):
                pass
        except urllib.error.HTTPError:
            pass  # 404 or 401: the registry logged it all the same
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_registry(extra_config: str = "") -> Registry:
    return Registry(Path(tempfile.mkdtemp(prefix="reconciler-registry-")), extra_config)
