"""Start Debian's docker-registry (distribution 2.8) as a plain process on a free loopback port.

The access log (combined log format, on the process's output) is the independent count of the
requests reconciler sends.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BINARY = "docker-registry"
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
        # Access lines are written when a response completes; give the last one a moment.
        time.sleep(0.2)
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
