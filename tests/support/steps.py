"""What the in-process tests of the steps and stores share: a run's stores, specs loaded from
real files, and the registry's access log read up to a sentinel request (never after a fixed
sleep: the sentinel is sent after the requests under test, so once its line is in the log,
theirs are too)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from reconciler.spec import LoadedSpec, load_specs
from reconciler.store.open import Stores
from reconciler.store.registry.retry import RetryPolicy
from tests.support.registry import Registry, Request


def unique(prefix: str) -> str:
    """A repository name no other test uses (the registries live for the whole session)."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def make_stores(concurrency: int = 8) -> Stores:
    """The stores of one run: no credentials, real retries with short waits."""
    return Stores(
        env={"DOCKER_CONFIG": "/nonexistent"},
        concurrency=concurrency,
        retry=RetryPolicy(attempts=2, base=0.01, cap=0.05),
    )


def write_spec(directory: Path, name: str, body: str) -> Path:
    """One ImageSpec document named `name` whose `spec:` section is `body`."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = textwrap.indent(textwrap.dedent(body).strip("\n"), "  ")
    path = directory / f"{name}.yaml"
    path.write_text(
        "apiVersion: reconciler.dev/v1alpha1\nkind: ImageSpec\n"
        f"metadata:\n  name: {name}\nspec:\n{spec}\n"
    )
    return path


def load_spec(directory: Path, name: str, body: str) -> LoadedSpec:
    path = write_spec(directory, name, body)
    result = load_specs([path])
    assert result.errors == (), [str(e) for e in result.errors]
    (spec,) = result.specs
    return spec


def traffic(registry: Registry, since: int) -> list[Request]:
    """The requests the registry logged after `since` (a `registry.mark()`), up to a sentinel."""
    return registry.requests(since)


def calls(requests: list[Request], method: str, fragment: str = "") -> list[Request]:
    return [r for r in requests if r.method == method and fragment in r.path]
