"""What is pushed beside an image: our signatures, the base's signatures and attestations
carried along, and referrers. Each becomes an `ArtifactPlan`, planned as an image is (blobs the
destination lacks, the manifest, its tag) and pushed after the image's tags.

- **Signatures** (`signing:`): each manifest and index apply writes to a registry target gets
  a cosign signature, a simple-signing payload naming the target reference (`host/repo:tag`)
  and the digest, appended as a layer to the `sha256-<hex>.sig` manifest of the target
  repository: other signers' layers are kept. What we signed is remembered in the state
  directory by the `.sig` manifest's digest, so a no-op costs one HEAD per signed manifest and
  never signs again.
- **Carried** (`carry:` on a spec that mirrors its base): the base's signatures are merged
  into the target's `.sig` manifest (with ours, if we sign: one manifest, one writer); its
  `.att` and `.sbom` tags are copied; its referrers (the tag-schema fallback index
  `sha256-<hex>`, filtered by artifactType) are listed in the target's. To registries and OCI
  layouts alike.
- **Attached** (`attach:`): files become OCI artifacts whose subject is the image, listed in
  the fallback referrers index of every target (merged with what other writers listed).
- **Provenance** (`provenance:`, with signing): each manifest we sign also gets an SLSA
  Provenance v1 statement (reconciler/model/provenance.py) in a DSSE envelope signed with the
  same key, a layer of its `sha256-<hex>.att` manifest; our earlier statement is replaced
  when it changed, other writers' layers are kept. An unchanged image keeps its statement
  (compared without its times), remembered like signatures: a no-op costs one HEAD per `.att`.

Several specs of a run may write the same artifact tag (fan-out instances whose base tags
name one digest, two targets in one repository): each spec claims the tags it writes, in one
global order, from planning until its push is done, and reads what an earlier claimant pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cache import ContentCache
from reconciler.errors import NotFoundError, TrustError
from reconciler.memo import Memo
from reconciler.model.desired import DesiredBlob, DesiredImage, DesiredManifest, artifact_image
from reconciler.model.plan import ArtifactKind, ArtifactPlan, SpecPlan, build_plan
from reconciler.model.provenance import (
    SLSA_PROVENANCE,
    BuildRun,
    SourceFiles,
    sbom_statement,
    spec_of,
    stable_part,
    statement,
)
from reconciler.model.sources import ResolvedBase
from reconciler.observe import Observer
from reconciler.oci import mediatypes as mt
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument, parse_document
from reconciler.oci.location import Address, Location
from reconciler.oci.models import Descriptor
from reconciler.resolve import Resolver
from reconciler.spec import LoadedSpec, SigningSpec
from reconciler.store.base import ReferrersLister
from reconciler.store.open import Stores
from reconciler.trust.artifacts import (
    ATT_SUFFIX,
    SBOM_SUFFIX,
    SIG_SUFFIX,
    Blob,
    artifact_manifest,
    has_signature,
    load_artifact_manifest,
    parse_referrers_index,
    read_signature_manifest,
    referrers_index,
    signature_manifest,
    tag_for,
)
from reconciler.trust.attest import MAX_ATTESTATIONS
from reconciler.trust.config import KeySource
from reconciler.trust.dsse import (
    DSSE_TYPE,
    MAX_ENVELOPE,
    PREDICATE_ANNOTATION,
    attestation_manifest,
    envelope,
    parse_envelope,
    verifies,
)
from reconciler.trust.files import MAX_KEY_FILE, read_small_file
from reconciler.trust.simplesigning import signing_payload

if TYPE_CHECKING:  # keys load cryptography and PyNaCl: only when a spec signs
    from reconciler.trust.keys import PrivateKey

log = logging.getLogger("reconciler.attach")

ATTACH_FILE_LIMIT = 64 * 1024 * 1024
# Marks the referrers this reconciler attached for a spec, so that a changed file's old
# artifact is dropped from the fallback index instead of piling up.
ATTACHED_BY = "dev.reconciler.attached-by"

Claim = tuple[str, str]  # (location, tag): an artifact tag a spec writes


def _stamp(path: Path | None) -> tuple[int, int] | None:
    try:
        status = path.stat() if path is not None else None
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size) if status is not None else None


class Keys:
    """Signing keys, each loaded once per content of its files (a rotated key or passphrase
    is read again), off the event loop (scrypt is slow on purpose). A key that failed to load
    fails again without another try until its files change. Passphrases are not kept."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[object, ...], PrivateKey | TrustError] = {}

    def _identity(self, source: KeySource) -> tuple[object, ...]:
        env = os.environ.get(source.passphrase_env) if source.passphrase_env else None
        seen = hashlib.sha256(env.encode()).hexdigest() if env is not None else None
        return (
            source,
            _stamp(source.key_file),
            _stamp(source.passphrase_file),
            seen,
        )

    async def load(self, source: KeySource) -> PrivateKey:
        identity = self._identity(source)
        known = self._loaded.get(identity)
        if known is None:
            try:
                known = await asyncio.to_thread(_load_key, source)
            except TrustError as exc:
                known = exc
            self._loaded[identity] = known
        if isinstance(known, TrustError):
            raise known
        return known


def _load_key(source: KeySource) -> PrivateKey:
    from reconciler.trust.keys import load_private_key

    where = f"signing key {source.key_file}"
    data = read_small_file(source.key_file, MAX_KEY_FILE, where, "the key")
    passphrase: bytes | None = None
    if source.passphrase_file is not None:
        where_secret = f"passphrase file {source.passphrase_file}"
        secret = read_small_file(
            source.passphrase_file, MAX_KEY_FILE, where_secret, "the passphrase"
        )
        passphrase = secret.rstrip(b"\r\n")
    elif source.passphrase_env is not None:
        value = os.environ.get(source.passphrase_env)
        if value is None:
            raise TrustError(f"{where}: environment variable {source.passphrase_env} is unset")
        passphrase = value.encode()
    return load_private_key(data, passphrase, where)


KEYS = Keys()  # one per process


def writes_provenance(spec: LoadedSpec) -> bool:
    """Whether our statements go beside the spec's images when it signs. Not with
    `provenance: false`, nor for a mirror that carries its base's `.sig`/`.att`: the image is
    the base's, built by someone else, and its `.att` is copied whole."""
    carry = spec.body.carry
    return spec.body.provenance and not (carry is not None and carry.signatures)


def spec_key_source(spec: LoadedSpec, default: KeySource | None) -> KeySource | None:
    """The key a spec signs with: its own `signing:`, none with `signing: false`, else the
    settings' default."""
    signing = spec.body.signing
    if signing is False:
        return None
    if isinstance(signing, SigningSpec):
        directory = Path(spec.file).parent
        return KeySource(
            directory / signing.key_file,
            directory / signing.passphrase_file if signing.passphrase_file else None,
            signing.passphrase_env,
            signing.recursive,
        )
    return default


@dataclass(frozen=True)
class _Carried:
    """What a mirror carries from its base."""

    signatures: ManifestDocument | None  # the base's `.sig` manifest
    tags: tuple[tuple[str, ManifestDocument], ...]  # `.att`, `.sbom`: copied whole
    referrers: tuple[tuple[Descriptor, ManifestDocument], ...]


_NOTHING = _Carried(None, (), ())

# `attach:` files that are also written as attestations with signing (predicate types as
# cosign's `attest --type spdxjson|cyclonedx` writes them).
SBOM_PREDICATES = {
    "application/spdx+json": "https://spdx.dev/Document",
    "application/vnd.cyclonedx+json": "https://cyclonedx.org/bom",
}


@dataclass(frozen=True)
class _Statement:
    """A statement of ours for an `.att` manifest: how an existing one is compared with it,
    and which existing ones are ours to replace."""

    predicate_type: str
    body: bytes
    compare: Callable[[bytes], Any]
    ours: Callable[[bytes], bool] = lambda _body: True


def _whole(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class Attacher:
    """Plans the artifacts of each spec; one per run, sharing HEADs with the observer."""

    def __init__(
        self,
        stores: Stores,
        resolver: Resolver,
        observer: Observer,
        cache: ContentCache,
        keys: Keys,
        default_key: KeySource | None,
        *,
        apply: bool = True,
        provenance: Provenance | None = None,
    ) -> None:
        self.stores = stores
        self.provenance = provenance  # None: no statements (settings' provenance.enabled)
        self.resolver = resolver  # manifests by digest: once per run, cached in the state dir
        self.observer = observer
        self.cache = cache
        self.keys = keys
        self.default_key = default_key
        self.apply = apply  # diff: a key that cannot be read here leaves signatures unshown
        self._memo = Memo()
        self._locks: dict[Claim, asyncio.Lock] = {}
        self._pushed: dict[Claim, Digest] = {}  # artifact tags pushed in this run
        self._unsure: set[Claim] = set()  # artifact tags a failed push may have moved
        self._unreadable: set[KeySource] = set()

    # -- claims: one writer per artifact tag at a time -----------------------------------

    @contextlib.asynccontextmanager
    async def claim(self, spec: LoadedSpec, desired: DesiredImage) -> AsyncIterator[None]:
        """Hold the artifact tags `spec` may write from planning until its push is done."""
        claims = sorted(self._claims(spec, desired))
        async with contextlib.AsyncExitStack() as stack:
            for claim in claims:
                await stack.enter_async_context(self._locks.setdefault(claim, asyncio.Lock()))
            yield

    def _claims(self, spec: LoadedSpec, desired: DesiredImage) -> set[Claim]:
        body = spec.body
        signing = spec_key_source(spec, self.default_key)
        root = desired.root.digest
        out: set[Claim] = set()
        for location in {t.location for t in desired.targets}:
            where = str(location)
            if signing is not None and location.is_registry:
                suffixes = [SIG_SUFFIX] + ([ATT_SUFFIX] if self._attests(spec) else [])
                for suffix in suffixes:
                    out.add((where, tag_for(root, suffix)))
                    if signing.recursive and desired.index is not None:
                        out.update(
                            (where, tag_for(m.document.digest, suffix)) for m in desired.manifests
                        )
            if body.carry is not None:
                out.update((where, tag_for(root, s)) for s in (SIG_SUFFIX, ATT_SUFFIX, SBOM_SUFFIX))
            if body.carry is not None or body.attach:
                out.add((where, tag_for(root, None)))
        return out

    def pushed(self, plan: SpecPlan) -> None:
        """Record the artifact tags a spec's push wrote: later claimants read them from here."""
        for artifact in plan.artifacts:
            for tag in artifact.plan.tags:
                claim = (str(tag.target.location), tag.target.identifier)
                self._pushed[claim] = tag.new
            if artifact.fact is not None:
                self.cache.put_fact(*artifact.fact)

    def unsure(self, plan: SpecPlan) -> None:
        """A push that failed part way: what its artifact tags name now is asked again."""
        for artifact in plan.artifacts:
            for tag in artifact.plan.tags:
                claim = (str(tag.target.location), tag.target.identifier)
                self._pushed.pop(claim, None)
                self._unsure.add(claim)

    async def _tag(self, address: Address) -> Digest | None:
        """What an artifact tag names: as this run pushed it, else as the store says (one
        HEAD per run, shared with the observer; asked again after a failed push)."""
        claim = (str(address.location), address.identifier)
        known = self._pushed.get(claim)
        if known is not None:
            return known
        if claim in self._unsure:
            reader = self.stores.reader(address.location)
            async with self.stores.slot(address.location):
                head = await reader.head_manifest(address.identifier)
            return head.digest if head is not None else None
        return await self.observer.tag_digest(address)

    # -- planning ------------------------------------------------------------------------

    async def plan(
        self, spec: LoadedSpec, desired: DesiredImage, base: ResolvedBase | None
    ) -> tuple[ArtifactPlan, ...]:
        """Every artifact plan of one spec, per target location: carried tags, the referrers
        index, then the `.sig` manifests (carried signatures and ours). Call within `claim`."""
        by_location: dict[Location, list[Address]] = {}
        for target in desired.targets:
            by_location.setdefault(target.location, []).append(target)
        carried = await self._carried(spec, desired, base)
        attached = self._attachments(spec, desired)
        key_source = spec_key_source(spec, self.default_key)
        key = None
        if key_source is not None and any(location.is_registry for location in by_location):
            key = await self._key(key_source)
        plans: list[ArtifactPlan] = []
        for location, targets in sorted(by_location.items()):
            assert base is not None or not (carried.tags or carried.referrers)  # noqa: S101
            for tag, document in carried.tags:
                plans.append(await self._carried_tag(desired, base, location, tag, document))
            if carried.referrers or attached:
                plans.append(
                    await self._referrers(spec, desired, base, location, carried, attached)
                )
            signer = key if location.is_registry else None
            digests = [desired.root.digest]
            recursive = key_source is not None and key_source.recursive
            if signer is not None and recursive and desired.index is not None:
                digests += [m.document.digest for m in desired.manifests]
            for digest in digests:
                signed = carried.signatures if digest == desired.root.digest else None
                if signer is None and signed is None:
                    continue
                assert base is not None or signed is None  # noqa: S101
                source = base.source if base is not None else None
                plans.append(
                    await self._signature(
                        desired, location, targets, digest, signer, signed, source
                    )
                )
                if signer is not None and self._attests(spec):
                    sboms = _sboms(spec, attached) if digest == desired.root.digest else []
                    plans.append(
                        await self._attestation(
                            spec, desired, base, location, digest, signer, sboms
                        )
                    )
        return tuple(p for p in plans if not p.plan.in_sync)

    def _attests(self, spec: LoadedSpec) -> bool:
        return self.provenance is not None and writes_provenance(spec)

    async def _key(self, source: KeySource) -> PrivateKey | None:
        try:
            return await self.keys.load(source)
        except TrustError as exc:
            if self.apply:
                raise
            if source not in self._unreadable:
                self._unreadable.add(source)
                log.warning("diff does not show signatures: %s", exc)
            return None

    async def for_archive(
        self, spec: LoadedSpec, desired: DesiredImage, base: ResolvedBase | None
    ) -> tuple[tuple[str, DesiredImage], ...]:
        """What `save` writes beside the image, by tag: the carried tags and signatures, and
        the fallback referrers index of what is carried and attached (an archive is signed by
        no one)."""
        carried = await self._carried(spec, desired, base)
        attached = self._attachments(spec, desired)
        out = []
        tags = list(carried.tags)
        if carried.signatures is not None:
            tags.append((tag_for(desired.root.digest, SIG_SUFFIX), carried.signatures))
        for tag, document in tags:
            assert base is not None  # noqa: S101 - carried tags come from a base
            blobs = _source_blobs(document, base.source)
            out.append((tag, artifact_image(desired.name, document, None, blobs)))
        if carried.referrers or attached:
            children, wanted = _referrer_children(spec, base, carried.referrers, attached)
            raw = referrers_index(None, wanted)
            index = parse_document(raw, mt.OCI_INDEX, None, what="referrers index")
            assert isinstance(index, IndexDocument)  # noqa: S101 - built as one
            image = artifact_image(desired.name, index, None, children=children)
            out.append((tag_for(desired.root.digest, None), image))
        return tuple(out)

    async def _carried(
        self, spec: LoadedSpec, desired: DesiredImage, base: ResolvedBase | None
    ) -> _Carried:
        """The base's signatures, tags and referrers a mirror carries along."""
        carry = spec.body.carry
        if carry is None:
            return _NOTHING
        assert base is not None  # noqa: S101 - validated: carry needs a base to mirror
        if base.root.digest != desired.root.digest:
            raise TrustError(
                f"{spec.location(('carry',))}: the result is not the base's digest (a "
                "platforms filter or a format change made a new image); the base's "
                "signatures and referrers would not cover it"
            )
        signatures = None
        tags: list[tuple[str, ManifestDocument]] = []
        if carry.signatures:
            for suffix in (SIG_SUFFIX, ATT_SUFFIX, SBOM_SUFFIX):
                tag = tag_for(base.root.digest, suffix)
                found = await self._source_manifest(base, tag)
                if found is None:
                    continue
                if suffix == SIG_SUFFIX:
                    signatures = found
                else:
                    tags.append((tag, found))
        referrers = (
            await self._source_referrers(base, carry.artifact_types) if carry.referrers else []
        )
        return _Carried(signatures, tuple(tags), tuple(referrers))

    # -- signatures: ours, and those carried from the base -------------------------------

    async def _signature(
        self,
        desired: DesiredImage,
        location: Location,
        targets: Sequence[Address],
        digest: Digest,
        key: PrivateKey | None,
        carried: ManifestDocument | None,
        source: Location | None,
    ) -> ArtifactPlan:
        """The target's `.sig` manifest for `digest`: what it holds, the carried signatures it
        lacks, and ours for each target identity it lacks."""
        tag = tag_for(digest, SIG_SUFFIX)
        address = Address(location, tag=tag)
        identities = sorted(str(t) for t in targets) if key is not None else []
        parts = []
        if key is not None:
            parts.append(f"signature of {digest.short} for {', '.join(identities)}")
            parts.append(f"(key {key.public.short})")
        if carried is not None:
            parts.insert(0, f"signatures carried from {source}" + (";" if parts else ""))
        label = " ".join(parts)
        fingerprint = key.public.fingerprint if key is not None else ""
        carried_digest = str(carried.digest) if carried is not None else ""
        current = await self._tag(address)

        def fact(sig: Digest | None) -> str:
            text = "\n".join(
                [str(location), str(sig), str(digest), fingerprint, carried_digest, *identities]
            )
            return hashlib.sha256(text.encode()).hexdigest()

        if current is not None and self.cache.has_fact("signed", fact(current)):
            return _in_sync(desired, address, label)
        existing = await self._get(location, tag) if current is not None else None
        missing = identities
        if existing is not None and key is not None:
            missing = self._unsigned(location, existing, digest, key, identities)
        pairs = []
        for identity in missing:
            assert key is not None  # noqa: S101 - identities exist only with a key
            payload = signing_payload(identity, digest)
            pairs.append((payload, key.sign(payload)))
        layers = carried.manifest.layers if carried is not None else ()
        if carried is not None and existing is None and not pairs and source is not None:
            # Nothing at the target and nothing of ours: the base's manifest, byte for byte.
            document = carried
            image = artifact_image(desired.name, document, address, _source_blobs(document, source))
        else:
            raw, blobs = signature_manifest(existing, pairs, layers)
            if existing is not None and raw == existing:
                self.cache.put_fact("signed", fact(current))
                return _in_sync(desired, address, label)
            document = _manifest(raw, f"signature manifest for {location}:{tag}")
            held = {d.digest: source for d in layers if source is not None}
            blobs_of = _desired_blobs(document, blobs, location, held)
            image = artifact_image(desired.name, document, address, blobs_of)
        plan = build_plan(image, await self.observer.observe(image))
        kind = ArtifactKind.SIGNATURE if key is not None else ArtifactKind.CARRIED
        return ArtifactPlan(kind, label, plan, ("signed", fact(document.digest)))

    async def _attestation(
        self,
        spec: LoadedSpec,
        desired: DesiredImage,
        base: ResolvedBase | None,
        location: Location,
        digest: Digest,
        key: PrivateKey,
        sboms: Sequence[tuple[str, bytes]] = (),
    ) -> ArtifactPlan:
        """The target's `.att` manifest for `digest` with our statements: the provenance, and
        for the image's root the `attach:` SBOMs (`sboms`: predicate type, document). One of
        ours that says the same (a provenance but for its times) is kept; ours that changed
        are replaced; other writers' layers are kept."""
        assert self.provenance is not None  # noqa: S101 - called only when it is set
        tag = tag_for(digest, ATT_SUFFIX)
        address = Address(location, tag=tag)
        files = await self._source_files(spec)
        subject = str(location)
        body = statement(spec, desired, base, subject, digest, files, self.provenance.bare, "")
        mine = (files.spec_path, spec.name)
        wanted = [
            _Statement(SLSA_PROVENANCE, body, stable_part, lambda b: spec_of(b) == mine),
            *(
                _Statement(kind, sbom_statement(str(location), digest, kind, data), _whole)
                for kind, data in sboms
            ),
        ]
        kinds = ", ".join(["SLSA v1", *(k.rsplit("/", 1)[-1] for k, _ in sboms)])
        label = f"attestations of {digest.short} ({kinds}; key {key.public.short})"
        expected = [w.compare(w.body) for w in wanted]  # what an existing one must equal
        stable = json.dumps(expected, sort_keys=True)
        stable_digest = hashlib.sha256(stable.encode()).hexdigest()

        def fact(att: Digest | None) -> str:
            text = "\n".join(
                [str(location), str(att), str(digest), key.public.fingerprint, stable_digest]
            )
            return hashlib.sha256(text.encode()).hexdigest()

        current = await self._tag(address)
        if current is not None and self.cache.has_fact("attested", fact(current)):
            return _in_sync(desired, address, label, ArtifactKind.ATTESTATION)
        existing = await self._get(location, tag) if current is not None else None
        replaced: list[Digest] = []
        kept: set[int] = set()
        if existing is not None:
            where = f"attestation manifest {location}:{tag}"
            types = {w.predicate_type for w in wanted}
            # Ours are among the newest few of our predicate types: at most MAX_ATTESTATIONS
            # envelopes are read (a crowded .att must not cost a GET per layer at every change).
            candidates = [
                layer
                for layer in load_artifact_manifest(existing, where).manifest.layers
                if layer.media_type == DSSE_TYPE
                and (layer.annotations or {}).get(PREDICATE_ANNOTATION) in types
                and layer.size <= MAX_ENVELOPE
            ][-MAX_ATTESTATIONS:]
            for layer in candidates:
                kind = (layer.annotations or {})[PREDICATE_ANNOTATION]
                raw = await self._blob(location, layer.digest)
                try:
                    parsed = parse_envelope(raw, f"{where}: layer {layer.digest.short}")
                except TrustError:
                    continue  # another writer's: theirs to mend
                if not verifies(parsed, key.public.verify):
                    continue  # not signed by our key: another writer's statement
                match = next(
                    (
                        i
                        for i, w in enumerate(wanted)
                        if w.predicate_type == kind and w.ours(parsed.body)
                    ),
                    None,
                )
                if match is None:
                    continue  # another spec's statement for the same image: it stays
                same = wanted[match].compare(parsed.body) == expected[match]
                if same and match not in kept:
                    kept.add(match)
                else:
                    replaced.append(layer.digest)
        pending = [w for i, w in enumerate(wanted) if i not in kept]
        if existing is not None and not pending and not replaced:
            self.cache.put_fact("attested", fact(current))
            return _in_sync(desired, address, label, ArtifactKind.ATTESTATION)
        if any(w.predicate_type == SLSA_PROVENANCE for w in pending):  # written: the real run
            finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            full = statement(
                spec, desired, base, subject, digest, files, self.provenance.run(), finished
            )
            pending = [
                replace(w, body=full) if w.predicate_type == SLSA_PROVENANCE else w for w in pending
            ]
        new = [(envelope(w.body, key.sign), w.predicate_type) for w in pending]
        raw, blobs = attestation_manifest(existing, replaced, new)
        document = _manifest(raw, f"attestation manifest for {location}:{tag}")
        image = artifact_image(
            desired.name, document, address, _desired_blobs(document, blobs, location)
        )
        plan = build_plan(image, await self.observer.observe(image))
        return ArtifactPlan(
            ArtifactKind.ATTESTATION, label, plan, ("attested", fact(document.digest))
        )

    async def _blob(self, location: Location, digest: Digest) -> bytes:
        async with self.stores.slot(location):
            try:
                return await self.stores.reader(location).get_blob(digest, MAX_ENVELOPE)
            except NotFoundError:
                raise TrustError(
                    f"{location}: blob {digest.short} vanished while it was read"
                ) from None

    async def _source_files(self, spec: LoadedSpec) -> SourceFiles:
        """The spec file and its directory's lock file, by digest: each file read once per
        run, and the git checkout's top and the lock once per directory (not once per spec
        of a directory of thousands)."""
        directory = Path(spec.file).parent
        around = await self._memo.get(
            ("directory", directory), lambda: asyncio.to_thread(_read_directory, directory)
        )
        return await self._memo.get(
            ("files", spec.file), lambda: asyncio.to_thread(_read_spec, spec.file, around)
        )

    @staticmethod
    def _unsigned(
        location: Location,
        existing: bytes,
        digest: Digest,
        key: PrivateKey,
        identities: Sequence[str],
    ) -> list[str]:
        """The identities with no signature by `key` over their payload in a `.sig` manifest.
        Our payloads are the same bytes every time, so a layer is ours when its descriptor
        names their digest and its signature verifies over them: no payload is read (another
        signer's malformed layer is skipped: it is theirs)."""
        where = f"signature manifest {location}:{tag_for(digest, SIG_SUFFIX)}"
        entries, _problems = read_signature_manifest(existing, where)
        public = key.public
        return [
            i for i in identities if not has_signature(entries, signing_payload(i, digest), public)
        ]

    # -- carried tags and referrers ------------------------------------------------------

    async def _source_manifest(self, base: ResolvedBase, tag: str) -> ManifestDocument | None:
        """A manifest the base's store holds under `tag` (one HEAD per run); an index there is
        not ours to carry (cosign writes manifests) and is left behind with a warning."""
        digest = await self.observer.tag_digest(Address(base.source, tag=tag))
        if digest is None:
            return None
        document = await self.resolver.fetch_document(base.source, digest)
        if not isinstance(document, ManifestDocument):
            log.warning("%s:%s is an index, not a cosign manifest; not carried", base.source, tag)
            return None
        return document

    async def _source_referrers(
        self, base: ResolvedBase, types: tuple[str, ...] | None
    ) -> list[tuple[Descriptor, ManifestDocument]]:
        """The base's referrers, from the referrers API when its registry answers it, else
        from the fallback tag: the wanted artifact types, those whose subject is the base."""
        raw = await self._referrers_api(base)
        where = f"referrers of {base.source}@{base.root.digest.short}"
        if raw is None:
            tag = tag_for(base.root.digest, None)
            digest = await self.observer.tag_digest(Address(base.source, tag=tag))
            if digest is None:
                return []
            raw = (await self.resolver.fetch_document(base.source, digest)).raw
            where = f"referrers index {base.source}:{tag}"
        out = []
        for entry in parse_referrers_index(raw, where):
            if types is not None and entry.artifact_type not in types:
                continue
            child = await self.resolver.fetch_document(base.source, entry.digest)
            if not isinstance(child, ManifestDocument):
                raise TrustError(f"{where}: referrer {entry.digest} is not a manifest")
            subject = child.manifest.subject
            if subject is None or subject.digest != base.root.digest:
                log.warning(
                    "%s: referrer %s is not about the base; not carried", where, entry.digest
                )
                continue
            out.append((entry, child))
        return out

    async def _referrers_api(self, base: ResolvedBase) -> bytes | None:
        """The referrers API's answer for the base (once per run), None where there is none."""
        reader = self.stores.reader(base.source)
        if not isinstance(reader, ReferrersLister):
            return None

        async def ask() -> bytes | None:
            async with self.stores.slot(base.source):
                return await reader.list_referrers(base.root.digest)

        return await self._memo.get(("referrers", base.source, base.root.digest), ask)

    async def _carried_tag(
        self,
        desired: DesiredImage,
        base: ResolvedBase | None,
        location: Location,
        tag: str,
        document: ManifestDocument,
    ) -> ArtifactPlan:
        assert base is not None  # noqa: S101 - carried tags come from a base
        address = Address(location, tag=tag)
        label = f"{tag} from {base.source}"
        if await self._tag(address) == document.digest:
            return _in_sync(desired, address, label)
        image = artifact_image(
            desired.name, document, address, _source_blobs(document, base.source)
        )
        plan = build_plan(image, await self.observer.observe(image))
        return ArtifactPlan(ArtifactKind.CARRIED, label, plan)

    def _attachments(
        self, spec: LoadedSpec, desired: DesiredImage
    ) -> list[tuple[Descriptor, ManifestDocument, tuple[Blob, ...]]]:
        """`attach:` files as artifact manifests whose subject is the image. A file must be in
        the spec file's directory or below (a spec cannot push the daemon's own secrets)."""
        if not spec.body.attach:
            return []  # most specs: no path to resolve, no descriptor to build
        out = []
        subject = desired.root.descriptor()
        directory = Path(spec.file).parent.resolve()
        for index, entry in enumerate(spec.body.attach):
            where = spec.location(("attach", index, "file"))
            path = (directory / entry.file).resolve()
            if not path.is_relative_to(directory):
                raise TrustError(f"{where}: {entry.file} is outside the spec's directory")
            data = read_small_file(path, ATTACH_FILE_LIMIT, str(where), str(path))
            file = Blob(Digest.of(data), entry.blob_media_type, data)
            annotations = {
                "org.opencontainers.image.title": path.name,
                **entry.annotations,
                ATTACHED_BY: spec.group or spec.name,
            }
            raw, blobs = artifact_manifest(subject, entry.artifact_type, (file,), annotations)
            document = _manifest(raw, f"{where}: artifact")
            descriptor = document.descriptor(
                artifact_type=entry.artifact_type, annotations=annotations
            )
            out.append((descriptor, document, blobs))
        return out

    async def _referrers(
        self,
        spec: LoadedSpec,
        desired: DesiredImage,
        base: ResolvedBase | None,
        location: Location,
        carried: _Carried,
        attached: Sequence[tuple[Descriptor, ManifestDocument, tuple[Blob, ...]]],
    ) -> ArtifactPlan:
        """The fallback referrers index of a target: what it lists, plus ours; our own earlier
        attachments that are no longer wanted are dropped."""
        tag = tag_for(desired.root.digest, None)
        address = Address(location, tag=tag)
        children, wanted = _referrer_children(spec, base, carried.referrers, attached)
        label = f"referrers of {desired.root.digest.short}: " + ", ".join(
            sorted({d.artifact_type or "?" for d in wanted})
        )
        current = await self._tag(address)
        mine = spec.group or spec.name

        def fact(index: Digest | None) -> str:
            text = "\n".join([str(location), str(index), *sorted(str(d.digest) for d in wanted)])
            return hashlib.sha256(text.encode()).hexdigest()

        if current is not None and self.cache.has_fact("referrers", fact(current)):
            return _in_sync(desired, address, label)
        listed: list[Descriptor] = []
        if current is not None:
            existing = await self._get(location, tag)
            listed = list(parse_referrers_index(existing, f"{location}:{tag}"))
        want = {d.digest for d in wanted}
        kept = [
            d for d in listed if (d.annotations or {}).get(ATTACHED_BY) != mine or d.digest in want
        ]
        if len(kept) == len(listed) and want <= {d.digest for d in listed}:
            self.cache.put_fact("referrers", fact(current))
            return _in_sync(desired, address, label)
        raw = referrers_index(None, [*kept, *wanted])
        index = parse_document(raw, mt.OCI_INDEX, None, what=f"referrers index {location}:{tag}")
        assert isinstance(index, IndexDocument)  # noqa: S101 - built as one
        image = artifact_image(desired.name, index, address, children=children)
        plan = build_plan(image, await self.observer.observe(image))
        return ArtifactPlan(ArtifactKind.REFERRERS, label, plan, ("referrers", fact(index.digest)))

    # -- reads ---------------------------------------------------------------------------

    async def _get(self, location: Location, tag: str) -> bytes:
        async with self.stores.slot(location):
            try:
                return (await self.stores.reader(location).get_manifest(tag)).raw
            except NotFoundError:
                raise TrustError(f"{location}:{tag} vanished while it was read") from None


def _referrer_children(
    spec: LoadedSpec,
    base: ResolvedBase | None,
    carried: Sequence[tuple[Descriptor, ManifestDocument]],
    attached: Sequence[tuple[Descriptor, ManifestDocument, tuple[Blob, ...]]],
) -> tuple[list[DesiredManifest], list[Descriptor]]:
    """The referrer manifests a fallback index lists (with their blobs), and its entries."""
    children: list[DesiredManifest] = []
    wanted: list[Descriptor] = []
    for descriptor, document in carried:
        assert base is not None  # noqa: S101 - carried referrers come from a base
        children.append(DesiredManifest(document, None, _source_blobs(document, base.source)))
        wanted.append(descriptor)
    for descriptor, document, blobs in attached:
        children.append(DesiredManifest(document, None, _desired_blobs(document, blobs, None)))
        wanted.append(descriptor)
    return children, wanted


def _manifest(raw: bytes, what: str) -> ManifestDocument:
    document = parse_document(raw, mt.OCI_MANIFEST, None, what=what)
    assert isinstance(document, ManifestDocument)  # noqa: S101 - built as one
    return document


def _in_sync(
    desired: DesiredImage,
    address: Address,
    label: str,
    kind: ArtifactKind = ArtifactKind.SIGNATURE,
) -> ArtifactPlan:
    plan = SpecPlan(desired.name, desired.root.digest, (), (), (), (address,), 0)
    return ArtifactPlan(kind, label, plan)


def _sboms(
    spec: LoadedSpec, attached: Sequence[tuple[Descriptor, ManifestDocument, tuple[Blob, ...]]]
) -> list[tuple[str, bytes]]:
    """The `attach:` files that are SBOMs (SPDX or CycloneDX JSON): (predicate type, the
    document), each checked to be a JSON object, as a statement's predicate must be."""
    out = []
    for index, (descriptor, document, blobs) in enumerate(attached):
        kind = SBOM_PREDICATES.get(descriptor.artifact_type or "")
        if kind is None:
            continue
        layer = document.manifest.layers[0].digest
        data = next(b.data for b in blobs if b.digest == layer)
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            where = spec.location(("attach", index, "file"))
            raise TrustError(f"{where}: an SBOM attested must be a JSON object")
        out.append((kind, data))
    return out


@dataclass(frozen=True)
class _Around:
    """What a spec's statement says of its directory: the git checkout it is in (its top),
    and its lock file as the repository names it, with its digest."""

    top: Path | None
    lock: tuple[str, Digest] | None


def _read_directory(directory: Path) -> _Around:
    absolute = directory.absolute()
    top = next((d for d in (absolute, *absolute.parents) if (d / ".git").exists()), None)
    lock = directory / "reconciler.lock"
    try:
        data = lock.read_bytes()
    except OSError:
        return _Around(top, None)
    return _Around(top, (_repository_path(lock, top), Digest.of(data)))


def _read_spec(file: str, around: _Around) -> SourceFiles:
    """The spec file's path as the repository names it (relative to the git top, else as
    given) and digest, and the lock file beside it."""
    path = Path(file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(f"{file}: cannot be read for its provenance ({exc.strerror})") from None
    lock_path, lock_digest = around.lock if around.lock is not None else (None, None)
    return SourceFiles(_repository_path(path, around.top), Digest.of(data), lock_path, lock_digest)


# Where CI systems name the commit and the repository's URL (checked in this order).
_CI_COMMIT = ("GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "CIRCLE_SHA1", "GIT_COMMIT")
_CI_REPOSITORY = ("CI_PROJECT_URL", "BUILDKITE_REPO", "CIRCLE_REPOSITORY_URL", "GIT_URL")


class Provenance:
    """What a run's statements say about it. The repository and commit (from the CI's
    environment or `git`) are looked up once, and only when a statement is written: a no-op
    compares statements without them (`stable_part`), so it starts no `git`."""

    def __init__(self, builder_id: str, specs_dir: Path, internal: Mapping[str, str]) -> None:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # the run's start
        self._args = (builder_id, specs_dir, internal, started)
        self._run: BuildRun | None = None
        from reconciler import __version__

        # The run as compared: no source, placeholder times (stable_part drops both).
        self.bare = BuildRun(builder_id, __version__, "", "", internal=internal)

    def run(self) -> BuildRun:
        if self._run is None:
            self._run = build_run(*self._args)
        return self._run


def build_run(
    builder_id: str, specs_dir: Path, internal: Mapping[str, str], started: str
) -> BuildRun:
    """What this apply says about itself in its statements: the repository and commit from
    the CI's environment, else from `git` in the specs directory (none when neither knows)."""
    import uuid

    from reconciler import __version__

    commit = next((os.environ[k] for k in _CI_COMMIT if os.environ.get(k)), None)
    repository = next((os.environ[k] for k in _CI_REPOSITORY if os.environ.get(k)), None)
    if os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL") or "https://github.com"
        repository = f"{server}/{os.environ['GITHUB_REPOSITORY']}"
    if commit is None:
        commit = _git(specs_dir, "rev-parse", "HEAD")
    if repository is None and commit is not None:
        repository = _git(specs_dir, "remote", "get-url", "origin")
    return BuildRun(
        builder_id,
        __version__,
        f"urn:uuid:{uuid.uuid4()}",
        started,
        _without_userinfo(repository) if repository else None,
        commit if commit and len(commit) <= 64 else None,
        internal,
    )


def _git(directory: Path, *args: str) -> str | None:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = done.stdout.strip()
    return out or None if done.returncode == 0 else None


def _without_userinfo(url: str) -> str:
    """A repository URL without credentials (`https://user:token@host/x` -> `https://host/x`):
    statements are public."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2] if "@" in url.split(":", 1)[0] else url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def _repository_path(path: Path, top: Path | None) -> str:
    """`path` relative to the checkout's `top`, else as given."""
    if top is None:
        return path.as_posix()
    return path.absolute().relative_to(top).as_posix()


def _desired_blobs(
    document: ManifestDocument,
    blobs: Sequence[Blob],
    location: Location | None,
    held: dict[Digest, Location] | None = None,
) -> tuple[DesiredBlob, ...]:
    """A manifest's blobs: those we made (bytes at hand), those `held` elsewhere (carried
    signatures at the base), the rest already at `location`."""
    made = {b.digest: b for b in blobs}
    parts = [("config", document.manifest.config)]
    parts += [("layer", layer) for layer in document.manifest.layers]
    out = []
    for role, descriptor in parts:
        blob = made.get(descriptor.digest)
        if blob is not None:
            out.append(DesiredBlob(descriptor, role, data=blob.data))
        else:
            source = (held or {}).get(descriptor.digest, location)
            out.append(DesiredBlob(descriptor, role, source=source))
    return tuple(out)


def _source_blobs(document: ManifestDocument, source: Location) -> tuple[DesiredBlob, ...]:
    manifest = document.manifest
    layers = (DesiredBlob(layer, "layer", source) for layer in manifest.layers)
    return (DesiredBlob(manifest.config, "config", source), *layers)
