"""Small documents fetched again, and registry quirks worked through (issue 21, points 4 and 6).

A fault proxy (tests/support/faultproxy.py) stands in front of each of the session's two real
registries; `reconciler diff` and `apply` run through both as users run them:
- a manifest or an image config whose body is cut short (before its Content-Length) or whose
  bytes do not match their digest is fetched again within the `retries` setting, then fails with
  an error naming the registry, the request path and what happened;
- a HEAD whose Content-Length is not the GET's (Harbor's manifests), is 0, or is missing (some
  proxies) changes nothing: the digest is the authority, and a size comes from verified bytes.
Results are checked with skopeo and by walking the target registry directly.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Cli, CliResult, World
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import sha256
from tests.support.walk import walk


@dataclass
class Rig:
    world: World
    a: FaultProxy  # in front of world.a: the base (base/single:1)
    b: FaultProxy  # in front of world.b: the added layer (vendor/runtime) and the targets

    @property
    def config(self) -> str:
        return sha256(self.world.single.images[0].config)

    def count(self, proxy: FaultProxy, method: str, pattern: str) -> int:
        return sum(1 for s in proxy.seen if s.method == method and re.search(pattern, s.path))


@pytest.fixture(scope="module")
def proxies(world: World) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    a, b = FaultProxy(world.a.host), FaultProxy(world.b.host)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def rig(world: World, proxies: tuple[FaultProxy, FaultProxy]) -> Iterator[Rig]:
    for proxy in proxies:
        proxy.clear()
        proxy.seen.clear()
    yield Rig(world, *proxies)
    for proxy in proxies:
        proxy.clear()


def write_case(cli: Cli, rig: Rig, case: str) -> str:
    """A spec over the base behind proxy a, adding a layer and writing a tag behind proxy b;
    returns its target repository."""
    repo = f"quirks/{case}"
    cli.write_spec(
        f"{case}.yaml",
        f"""
        base: {rig.a.host}/base/single:1
        layers:
          - ref: {rig.b.host}/vendor/runtime@{rig.world.vendor_layer.digest}
        annotations: {{case: {case}}}
        targets: [{rig.b.host}/{repo}:1]
        """,
        spec_name=case,
    )
    return repo


def retries(n: int) -> dict[str, str]:
    return {"RECONCILER_RETRIES": str(n)}


def assert_clean(result: CliResult) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output.lower(), output


def assert_applied(rig: Rig, repo: str, desired: str) -> None:
    """The tag names the desired manifest (skopeo reads it), and every blob it names is there
    with the size and digest its descriptor says (walked on the registry itself)."""
    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{rig.world.b.host}/{repo}:1",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert sha256(raw) == desired
    assert [d["size"] for d in json.loads(raw)["layers"]][-1] == rig.world.vendor_layer.size
    result = walk(rig.world.b.host, repo, "1")
    assert result.tag_present and result.problems == [], result.problems
    assert result.blobs == 3  # the config, the base's layer, the added one


# Point 4: a document cut short or corrupted once, then answered right.

MANIFEST = r"/base/single/manifests/sha256:"


def once_bad(rig: Rig, what: str, kind: str, times: int = 1) -> Fault:
    path = MANIFEST if what == "manifest" else rf"/blobs/{rig.config}$"
    return rig.a.add(Fault("GET", path, kind, after=40 if kind == "truncate" else 30, times=times))


DOCUMENT_FAULTS = [
    ("manifest", "truncate"),
    ("manifest", "flip"),
    ("config", "truncate"),
    ("config", "flip"),
]
IDS = [
    f"{what}-{'cut-short' if kind == 'truncate' else 'flipped'}" for what, kind in DOCUMENT_FAULTS
]


@pytest.mark.parametrize(("what", "kind"), DOCUMENT_FAULTS, ids=IDS)
def test_bad_document_once_is_fetched_again(rig: Rig, cli: Cli, what: str, kind: str) -> None:
    repo = write_case(cli, rig, f"{what}-{kind}-once")
    fault = once_bad(rig, what, kind)
    result = cli("apply", "-o", "json", env_extra=retries(1))
    assert result.code == 0, result.stdout + result.stderr
    assert_clean(result)
    assert fault.fired == 1
    path = MANIFEST if what == "manifest" else rf"/blobs/{rig.config}$"
    assert rig.count(rig.a, "GET", path) == 2  # the bad answer and the good one
    desired = result.json()["specs"][0]["desired"]  # type: ignore[index]
    assert isinstance(desired, str)
    assert_applied(rig, repo, desired)


@pytest.mark.parametrize(("what", "kind"), DOCUMENT_FAULTS, ids=IDS)
@pytest.mark.parametrize("times", [1, -1], ids=["retries-0", "always-bad"])
def test_bad_document_fails_naming_the_registry(
    rig: Rig, cli: Cli, what: str, kind: str, times: int
) -> None:
    case = f"{what}-{kind}-{'retries-0' if times == 1 else 'always'}"
    repo = write_case(cli, rig, case)
    fault = once_bad(rig, what, kind, times=times)
    allowed = 0 if times == 1 else 1
    result = cli("apply", env_extra=retries(allowed))
    assert result.code == 1, result.stdout + result.stderr
    assert_clean(result)
    tries = allowed + 1
    assert fault.fired == tries
    path = (
        "/v2/base/single/manifests/sha256:"
        if what == "manifest"
        else f"/v2/base/single/blobs/{rig.config}"
    )
    message = next(line for line in result.stdout.splitlines() if f"registry {rig.a.host}" in line)
    assert path in message, message
    happened = "cut short" if kind == "truncate" else "does not match its digest"
    assert happened in message, message
    assert f"{tries} {'try' if tries == 1 else 'tries'}" in message, message
    assert case in result.stdout  # the spec is named
    assert not walk(rig.world.b.host, repo, "1").tag_present
