"""Build the demo's images offline and push them with skopeo into the demo registries.

    python demo/seed.py MAIN_HOST VENDOR_HOST

MAIN_HOST gets library/base:1 (linux/amd64 + linux/arm64 index) and tools/extra (a layer);
VENDOR_HOST gets vendor/runtime (a layer). The bytes are deterministic (fixed mtimes, gzip
mtime 0), so the layer digests are the ones written in examples/specs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.images import (
    Image,
    make_layer,
    push_blob_only,
    push_layout,
    write_layout,
)

RUNTIME = make_layer({"opt/runtime/README": b"A vendor runtime, published on its own.\n" * 64})
TOOLS = make_layer({"usr/local/bin/healthcheck": b"#!/bin/sh\nexit 0\n"})
EXPECTED = {
    "vendor/runtime": "sha256:0aed3d98af5b60302d9e92e78bb2f3157d2403539466a8443e15644745e72dc4",
    "tools/extra": "sha256:b9bd6b2ba1cea1e0ff9ae252c5ec906373f3dcf98ec403224ff1aa404541d6c2",
}


def main() -> None:
    main_host, vendor_host = sys.argv[1], sys.argv[2]
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-seed-"))
    os_layer = make_layer({"etc/os-release": b"ID=demo\nNAME=Demo OS\n", "bin/sh": b"#!demo\n"})
    amd = Image("linux", "amd64", [os_layer, make_layer({"lib/libdemo.so": b"\x7fELF amd64"})])
    arm = Image(
        "linux", "arm64", [os_layer, make_layer({"lib/libdemo.so": b"\x7fELF arm64"})], variant="v8"
    )
    push_layout(write_layout(work / "base", [amd, arm]), f"{main_host}/library/base:1")
    push_blob_only(work / "runtime", vendor_host, "vendor/runtime", RUNTIME)
    push_blob_only(work / "tools", main_host, "tools/extra", TOOLS)
    for name, layer in (("vendor/runtime", RUNTIME), ("tools/extra", TOOLS)):
        if layer.digest != EXPECTED[name]:
            # zlib produced other bytes than where examples/specs were written: say so plainly.
            sys.exit(f"seed: {name} is {layer.digest}, examples/specs expect {EXPECTED[name]}")
        print(f"seeded {name} {layer.digest}", file=sys.stderr)


if __name__ == "__main__":
    main()
