"""Faults injected for real: a proxy in front of each of two real registries breaks requests.

Each case runs `reconciler apply` as users do and checks two things: the outcome users expect
(a retry that converges, or a clear error that names the problem), and the registry's state
(the target tag is either absent or names a complete image; a corrupted blob is never stored).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate

import httpx
import pytest

from tests.conftest import Cli
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import Image, Layer, make_layer, push_blob_only, push_layout, write_layout
from tests.support.registry import Registry, start_registry
from tests.support.report import record
from tests.support.walk import walk


@dataclass
class Rig:
    source: Registry
    dest: Registry
    src: FaultProxy  # in front of source
    dst: FaultProxy  # in front of dest
    vendor: Layer  # 1.5 MiB layer in source vendor/layer (copied across registries)
    local: Layer  # layer in dest shared/layer (mounted within dest)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("faults")
    source, dest = start_registry(), start_registry()
    base = Image(
        "linux",
        "amd64",
        [make_layer({"bin/a": os.urandom(200_000)}), make_layer({"lib/b": os.urandom(200_000)})],
    )
    push_layout(write_layout(root / "base", [base], index=False), f"{source.host}/base/app:1")
    vendor = make_layer({"opt/vendor.bin": os.urandom(1_500_000)})
    push_blob_only(root / "vendor", source.host, "vendor/layer", vendor)
    local = make_layer({"etc/local.conf": os.urandom(50_000)})
    push_blob_only(root / "local", dest.host, "shared/layer", local)
    rig = Rig(source, dest, FaultProxy(source.host), FaultProxy(dest.host), vendor, local)
    yield rig
    rig.src.stop()
    rig.dst.stop()
    source.stop()
    dest.stop()


@pytest.fixture
def faults(rig: Rig) -> Iterator[Rig]:
    rig.src.clear()
    rig.dst.clear()
    rig.src.seen.clear()
    rig.dst.seen.clear()
    yield rig
    rig.src.clear()
    rig.dst.clear()


def write_case(cli: Cli, rig: Rig, case: str, *, mount: bool = False) -> str:
    """A spec whose target repository belongs to this case alone; returns that repository."""
    repo = f"case/{case}"
    layer = (
        f"{rig.dst.host}/shared/layer@{rig.local.digest}"
        if mount
        else f"{rig.src.host}/vendor/layer@{rig.vendor.digest}"
    )
    cli.write_spec(
        f"{case}.yaml",
        f"""
        base: {rig.src.host}/base/app:1
        layers:
          - ref: {layer}
        annotations: {{case: {case}}}
        targets: [{rig.dst.host}/{repo}:1]
        """,
        spec_name=case,
    )
    return repo


def settings(cli: Cli, text: str) -> list[str]:
    path = cli.root / "settings.yaml"
    path.write_text(text)
    return ["--config", str(path)]


def assert_complete(rig: Rig, repo: str) -> int:
    """The tag exists and names a complete image; returns the number of blobs checked."""
    result = walk(rig.dest.host, repo, "1")
    assert result.tag_present, repo
    assert result.problems == []
    return result.blobs


def assert_absent(rig: Rig, repo: str, *blobs: str) -> None:
    """No tag, and none of the named blobs stored in the repository."""
    assert not walk(rig.dest.host, repo, "1").tag_present
    for digest in blobs:
        status = httpx.head(f"http://{rig.dest.host}/v2/{repo}/blobs/{digest}").status_code
        assert status == 404, digest


def report(case: str, fault: Fault, outcome: str, started: float, code: int) -> None:
    record(
        "faults",
        case=case,
        fault=fault.kind,
        request=f"{fault.method} {fault.path}",
        status=fault.status if fault.kind == "status" else None,
        fired=fault.fired,
        outcome=outcome,
        exit=code,
        seconds=round(time.monotonic() - started, 2),
    )


def blob_path(digest: str) -> str:
    return rf"/blobs/{digest}$"


CONVERGING = [
    # (case, which proxy, fault, extra settings)
    (
        "reset-mid-blob",
        "src",
        lambda r: Fault("GET", blob_path(r.vendor.digest), "reset", after=200_000),
        "",
    ),
    (
        "truncated-blob",
        "src",
        lambda r: Fault("GET", blob_path(r.vendor.digest), "truncate", after=700_000),
        "",
    ),
    (
        "flipped-byte",
        "src",
        lambda r: Fault("GET", blob_path(r.vendor.digest), "flip", after=1_000_000, times=2),
        "",
    ),
    (
        "500-on-patch",
        "dst",
        lambda r: Fault("PATCH", r"/blobs/uploads/", "status", status=500),
        "registries: {DST: {chunk_size: 1048576}}\n",
    ),
    (
        "500-on-put-blob",
        "dst",
        lambda r: Fault("PUT", r"/blobs/uploads/.*digest=", "status", status=500),
        "",
    ),
    ("reset-on-put-blob", "dst", lambda r: Fault("PUT", r"/blobs/uploads/.*digest=", "reset"), ""),
    (
        "502-on-put-manifest",
        "dst",
        lambda r: Fault("PUT", r"/manifests/", "status", status=502),  # the root goes by tag
        "",
    ),
    (
        "503-on-head",
        "dst",
        lambda r: Fault("HEAD", r"/manifests/1$", "status", status=503, times=3),
        "",
    ),
    (
        "504-on-base",
        "src",
        lambda r: Fault("GET", r"/base/app/manifests/", "status", status=504),
        "",
    ),
    ("408-on-post", "dst", lambda r: Fault("POST", r"/blobs/uploads/", "status", status=408), ""),
    (
        "no-digest-on-head",
        "src",
        lambda r: Fault(
            "HEAD", r"/manifests/", "drop_header", headers={"Docker-Content-Digest": ""}, times=-1
        ),
        "",
    ),
    (
        "relative-location",
        "dst",
        lambda r: Fault("*", r"/blobs/uploads/", "relative_location", times=-1),
        "registries: {DST: {chunk_size: 1048576}}\n",
    ),
]


@pytest.mark.parametrize(
    ("case", "side", "make", "extra"), CONVERGING, ids=[c[0] for c in CONVERGING]
)
def test_fault_then_converge(faults: Rig, cli: Cli, case: str, side: str, make, extra: str) -> None:  # type: ignore[no-untyped-def]
    rig = faults
    repo = write_case(cli, rig, case)
    fault = (rig.src if side == "src" else rig.dst).add(make(rig))
    args = settings(cli, extra.replace("DST", f'"{rig.dst.host}"')) if extra else []
    started = time.monotonic()
    result = cli("apply", *args)
    report(case, fault, "retried and converged", started, result.code)
    assert result.code == 0, result.stdout + result.stderr
    assert fault.fired >= 1
    assert assert_complete(rig, repo) == 4  # config, two base layers, vendor layer
    assert cli("diff", *args).code == 0
    if case in ("500-on-patch", "500-on-put-blob", "reset-on-put-blob"):
        # The failed upload started over with a fresh session: one POST more than the two
        # uploads (vendor layer, generated config) need.
        posts = [s for s in rig.dst.seen if s.method == "POST" and "/blobs/uploads/" in s.path]
        assert len(posts) >= 3


def test_202_on_mount_uploads_instead(faults: Rig, cli: Cli) -> None:
    rig = faults
    repo = write_case(cli, rig, "202-on-mount", mount=True)
    fault = rig.dst.add(Fault("POST", rf"mount={rig.local.digest}", "no_mount", times=-1))
    started = time.monotonic()
    result = cli("apply")
    report("202-on-mount", fault, "uploaded through the session it opened", started, result.code)
    assert result.code == 0, result.stdout + result.stderr
    assert fault.fired >= 1
    assert assert_complete(rig, repo) == 4
    # The layer crossed the wire (GET from the mount source, PATCH/PUT into the session).
    assert any(s.method == "GET" and s.path.endswith(rig.local.digest) for s in rig.dst.seen)


def too_many_requests(repo: str, retry_after: str, times: int = 1) -> Fault:
    """429 with Retry-After on the HEAD of the target tag."""
    headers = {"Retry-After": retry_after}
    return Fault(
        "HEAD", rf"/{repo}/manifests/1$", "status", status=429, headers=headers, times=times
    )


def test_429_retry_after_seconds_and_date(faults: Rig, cli: Cli) -> None:
    rig = faults
    for case, value in (("429-seconds", "2"), ("429-http-date", None)):
        repo = write_case(cli, rig, case)
        header = value or formatdate(time.time() + 3, usegmt=True)
        fault = rig.dst.add(too_many_requests(repo, header))
        started = time.monotonic()
        result = cli("apply")
        report(case, fault, f"waited as asked (Retry-After: {header})", started, result.code)
        assert result.code == 0, result.stdout + result.stderr
        tries = [
            s for s in rig.dst.seen if s.method == "HEAD" and s.path.endswith(f"{repo}/manifests/1")
        ]
        assert tries[0].status == 429
        waited = tries[1].at - tries[0].at
        assert waited >= (1.9 if value else 1.0), waited  # an HTTP-date has 1 s resolution
        assert_complete(rig, repo)
        (cli.specs / f"{case}.yaml").unlink()


def test_retry_after_too_long_fails_clearly(faults: Rig, cli: Cli) -> None:
    rig = faults
    repo = write_case(cli, rig, "429-hour")
    fault = rig.dst.add(too_many_requests(repo, "3600", times=-1))
    started = time.monotonic()
    result = cli("apply")
    report("429-hour", fault, "failed at once, naming the wait", started, result.code)
    assert result.code == 1
    assert "429" in result.stdout and "Retry-After 3600s" in result.stdout
    assert time.monotonic() - started < 30
    assert fault.fired == 1  # honoured: not hammered
    assert_absent(rig, repo)


FAILING = [
    # (case, side, fault, words the error must contain, blobs that must not be stored)
    (
        "truncated-always",
        "src",
        lambda r: Fault("GET", blob_path(r.vendor.digest), "truncate", after=700_000, times=-1),
        "bytes it announced",
    ),
    (
        "flipped-always",
        "src",
        lambda r: Fault("GET", blob_path(r.vendor.digest), "flip", after=10, times=-1),
        "digest mismatch",
    ),
    (
        "500-always",
        "dst",
        lambda r: Fault("PUT", r"/blobs/uploads/.*digest=", "status", status=500, times=-1),
        "500",
    ),
    (
        "manifest-over-4mib",
        "src",
        lambda r: Fault(
            "GET",
            r"/base/app/manifests/",
            "body",
            body=b"{" + b" " * (5 * 1024 * 1024) + b"}",
            times=-1,
        ),
        "over the 4194304-byte limit",
    ),
    (
        "400-manifest-invalid",
        "dst",
        lambda r: Fault(
            "PUT",
            r"/manifests/",  # a single-manifest root goes up by its tag alone
            "status",
            status=400,
            body=b'{"errors":[{"code":"MANIFEST_INVALID","message":"rejected by test"}]}',
            headers={"Content-Type": "application/json"},
            times=-1,
        ),
        "MANIFEST_INVALID",
    ),
]


@pytest.mark.parametrize(("case", "side", "make", "words"), FAILING, ids=[c[0] for c in FAILING])
def test_fault_that_stays_fails_clearly(
    faults: Rig, cli: Cli, case: str, side: str, make, words: str
) -> None:  # type: ignore[no-untyped-def]
    rig = faults
    repo = write_case(cli, rig, case)
    fault = (rig.src if side == "src" else rig.dst).add(make(rig))
    started = time.monotonic()
    result = cli("apply")
    report(case, fault, f"clear error ({words})", started, result.code)
    assert result.code == 1, result.stdout + result.stderr
    assert words in result.stdout, result.stdout
    assert case in result.stdout  # the spec is named
    # Blobs are pushed before manifests, so a refused manifest leaves them (harmless, reused);
    # in every other case the vendor layer never reached the target.
    assert_absent(rig, repo, *(() if case == "400-manifest-invalid" else (rig.vendor.digest,)))
    if case in ("manifest-over-4mib", "400-manifest-invalid"):
        assert fault.fired == 1  # not retryable: asked once
    else:
        assert 2 <= fault.fired <= 6 * 6  # retried, and bounded
