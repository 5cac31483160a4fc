"""SLSA provenance for the images apply writes: an in-toto Statement v1 whose predicate is SLSA
Provenance v1 (docs/provenance.md says what each field holds).

Pure: the caller reads the spec and lock files (their digests come in `SourceFiles`) and
knows the run (`BuildRun`); everything else comes from the desired image and the resolved base.
A statement is stable: the same inputs give the same bytes but for `runDetails.metadata`
(times, invocation), and `stable_part` is what two statements are compared by.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model.desired import DesiredImage
from reconciler.model.sources import ResolvedBase
from reconciler.oci.digest import Digest
from reconciler.spec import LoadedSpec

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://reconciler.dev/buildtypes/imagespec/v1"


@dataclass(frozen=True)
class BuildRun:
    """What one apply run says about itself."""

    builder_id: str
    version: str  # reconciler's
    invocation_id: str
    started_on: str  # RFC 3339, UTC
    repository: str | None = None  # the specs repository's URL (git remote, or the CI's)
    commit: str | None = None
    internal: Mapping[str, Any] | None = None  # settings that change the result


@dataclass(frozen=True)
class SourceFiles:
    """The spec file (and its directory's lock file), as named in the repository."""

    spec_path: str
    spec_digest: Digest
    lock_path: str | None = None
    lock_digest: Digest | None = None


def _digest_set(digest: Digest) -> dict[str, str]:
    return {digest.algorithm: digest.hex}


def _source_uri(run: BuildRun, path: str) -> str:
    """A file of the specs repository: `git+URL@COMMIT#PATH` when both are known."""
    if run.repository and run.commit:
        return f"git+{run.repository}@{run.commit}#{path}"
    return path


def dependencies(
    spec: LoadedSpec,
    desired: DesiredImage,
    base: ResolvedBase | None,
    files: SourceFiles,
    run: BuildRun,
) -> list[dict[str, Any]]:
    """The base, each added layer by its source (or the path layer it was built from), the
    spec file and the lock file: each with its URI and digest."""
    out: list[dict[str, Any]] = []
    inherited: set[Digest] = set()
    if base is not None:
        name = base.name or str(base.source)
        uri = f"oci://{name}" if base.source.is_registry else name
        out.append({"uri": uri, "name": "base", "digest": _digest_set(base.root.digest)})
        inherited = {d.digest for image in base.images for d in image.manifest.manifest.layers}
    paths = [layer.path for layer in spec.body.layers if layer.path is not None]
    built: list[Digest] = []
    seen: set[Digest] = set()
    for manifest in desired.manifests:
        for blob in manifest.blobs:
            digest = blob.descriptor.digest
            if blob.role != "layer" or digest in inherited or digest in seen:
                continue
            seen.add(digest)
            if blob.source is None:
                built.append(digest)
                continue
            out.append(
                {
                    "uri": f"oci://{blob.source}",
                    "name": "layer",
                    "digest": _digest_set(digest),
                    "mediaType": blob.descriptor.media_type,
                }
            )
    for i, digest in enumerate(built):
        path = paths[i] if len(paths) == len(built) else None
        entry: dict[str, Any] = {"name": "path layer", "digest": _digest_set(digest)}
        if path is not None:
            entry["uri"] = _source_uri(run, _join(files.spec_path, path))
        out.append(entry)
    out.append(
        {
            "uri": _source_uri(run, files.spec_path),
            "name": "spec",
            "digest": _digest_set(files.spec_digest),
        }
    )
    if files.lock_path is not None and files.lock_digest is not None:
        out.append(
            {
                "uri": _source_uri(run, files.lock_path),
                "name": "lock",
                "digest": _digest_set(files.lock_digest),
            }
        )
    return out


def _join(spec_path: str, relative: str) -> str:
    directory = spec_path.rpartition("/")[0]
    return f"{directory}/{relative}" if directory else relative


def statement(
    spec: LoadedSpec,
    desired: DesiredImage,
    base: ResolvedBase | None,
    subject: str,
    digest: Digest,
    files: SourceFiles,
    run: BuildRun,
    finished_on: str,
) -> bytes:
    """The statement for `subject@digest` (an image apply writes), as compact JSON with
    sorted keys."""
    external: dict[str, Any] = {
        "spec": {
            "path": files.spec_path,
            "name": spec.name,
            "digest": _digest_set(files.spec_digest),
        }
    }
    if run.repository or run.commit:
        external["source"] = {
            k: v for k, v in (("repository", run.repository), ("commit", run.commit)) if v
        }
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": _digest_set(digest)}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": {"reconciler": run.version, **(run.internal or {})},
                "resolvedDependencies": dependencies(spec, desired, base, files, run),
            },
            "runDetails": {
                "builder": {"id": run.builder_id, "version": {"reconciler": run.version}},
                "metadata": {
                    "invocationId": run.invocation_id,
                    "startedOn": run.started_on,
                    "finishedOn": finished_on,
                },
            },
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def stable_part(body: bytes) -> Any:
    """What two statements are compared by: one without its run's metadata (times,
    invocation), the commit and repository it was made at, and the lock file (its digest
    moves with every other spec's entry). An unchanged image keeps its statement across
    commits; a changed spec file or dependency gets a new one. None when `body` is no
    statement of ours."""
    try:
        document = json.loads(body)
        predicate = document["predicate"]
        predicate["runDetails"].pop("metadata", None)
        definition = predicate["buildDefinition"]
        definition["externalParameters"].pop("source", None)
        kept = []
        for entry in definition["resolvedDependencies"]:
            if entry.get("name") == "lock":
                continue
            uri = entry.get("uri")
            if isinstance(uri, str) and uri.startswith("git+"):
                entry["uri"] = uri.rpartition("#")[2]
            kept.append(entry)
        definition["resolvedDependencies"] = kept
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return document


def spec_of(body: bytes) -> tuple[str, str] | None:
    """The spec (path, name) a statement of ours was made from: two specs that build the same
    image each keep their own statement beside the other's."""
    try:
        spec = json.loads(body)["predicate"]["buildDefinition"]["externalParameters"]["spec"]
        path, name = spec["path"], spec["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return (path, name) if isinstance(path, str) and isinstance(name, str) else None


def sbom_statement(subject: str, digest: Digest, predicate_type: str, document: bytes) -> bytes:
    """An in-toto Statement v1 whose predicate is an SBOM document (SPDX or CycloneDX JSON,
    a JSON object: the caller checked it), as `cosign attest --type spdxjson` writes it."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": _digest_set(digest)}],
        "predicateType": predicate_type,
        "predicate": json.loads(document),
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
