"""Verify what a spec consumes before anything is built from it (the trust policy).

The policy has the shape of containers-policy.json(5): per registry or repository scope,
`insecureAcceptAnything`, `reject` or `sigstoreSigned` (a cosign key and a signed identity).
The base, and every layer whose source `image` a spec names, is checked at the exact digest the
build uses: its cosign signatures are read from the `sha256-<hex>.sig` tag beside it (in a
registry, an OCI layout or an archive alike) and one must verify with a key of the policy,
over a payload that names that digest and an identity the rule accepts. A layer given by
digest alone is checked against its repository's scope too: `reject` refuses it, and a scope
that asks for signatures needs the `image` it comes from. A source that fails fails its spec,
naming the image, the scope and why; nothing of that spec is pushed.

The settings' policy is the operator's floor: a spec's own `trust:` adds requirements to it
and never takes any away.

A digest's verdict never changes for the same keys and rule, so an accepted one is cached in
the state directory by digest and key: a no-op whose sources did not move sends no signature
request at all. Refusals are not cached (a signature may be added later).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.cache import ContentCache
from reconciler.errors import NotFoundError, ReconcilerError, TrustError
from reconciler.memo import Memo
from reconciler.model.sources import ResolvedBase, ResolvedLayer
from reconciler.oci.digest import Digest
from reconciler.oci.document import IndexDocument, ManifestDocument
from reconciler.oci.location import Address, Location
from reconciler.resolve import Resolver
from reconciler.spec import LoadedSpec
from reconciler.store.open import Stores
from reconciler.trust.artifacts import (
    ATT_SUFFIX,
    SIG_SUFFIX,
    SignatureEntry,
    load_artifact_manifest,
    read_signature_manifest,
    tag_for,
)
from reconciler.trust.config import PolicySource
from reconciler.trust.policy import (
    ExactReference,
    ExactRepository,
    InsecureAcceptAnything,
    Reject,
    Requirement,
    SignedBy,
    SigstoreAttested,
    SigstoreSigned,
    describe_gpg_keys,
    key_source,
    keys_of,
)
from reconciler.trust.simplesigning import MAX_PAYLOAD

if TYPE_CHECKING:  # keys load cryptography: only when a key is read
    from reconciler.trust.keys import PublicKey
    from reconciler.trust.verify import (  # where a signature is asked for
        ImageIdentity,
        KnownKey,
        Verdict,
    )

# A `.sig` manifest may carry many signers; the newest this many are read.
MAX_SIGNATURES = 64
MAX_ATTESTATION_BYTES = 16 * 1024 * 1024  # envelopes read for one verdict, the newest first


@dataclass(frozen=True)
class Subject:
    """One image a spec consumes, at the digest the build uses."""

    where: str  # "specs/a.yaml:3: spec.base"
    location: Location
    reference: Address | None  # as written (tag or digest); None for a local store's image
    digest: Digest


class Verifier:
    """One per run; verdicts are shared across specs (memo) and runs (cache)."""

    def __init__(
        self,
        stores: Stores,
        cache: ContentCache,
        resolver: Resolver,
        default: PolicySource | ReconcilerError | None,
    ) -> None:
        self.stores = stores
        self.cache = cache
        self.resolver = resolver
        self.default = default
        self._memo = Memo()
        self._keys: dict[tuple[int, Path], tuple[PublicKey, ...]] = {}  # by requirement

    def policies_for(self, spec: LoadedSpec) -> list[PolicySource]:
        """The settings' policy (whose failure to load fails the spec), and the spec's own."""
        if isinstance(self.default, ReconcilerError):
            raise TrustError(str(self.default))
        out = [self.default] if self.default is not None else []
        if spec.body.trust is not None:
            where = f"{spec.location(('trust',))}"
            out.append(PolicySource(spec.body.trust, Path(spec.file).parent, where))
        return out

    async def verify_sources(
        self, spec: LoadedSpec, base: ResolvedBase | None, layers: Sequence[ResolvedLayer]
    ) -> None:
        """Raise TrustError when the base or a layer is not trusted by every policy."""
        for source in self.policies_for(spec):
            subjects: list[Subject] = []
            if base is not None:
                subjects.append(self._base_subject(spec, base))
            for index, layer in enumerate(layers):
                if layer.spec.image is not None:
                    subjects.append(await self._layer_subject(spec, index, layer))
                elif layer.source is not None:
                    self._check_bare_layer(source, spec, index, layer)
            await asyncio.gather(*(self._check(source, s) for s in subjects))

    def _base_subject(self, spec: LoadedSpec, base: ResolvedBase) -> Subject:
        address = spec.base_address()
        assert address is not None  # noqa: S101 - a resolved base has an address
        where = str(spec.location(("base",)))
        if not address.location.is_registry:
            # A local image has no registry scope, and the name an archive records for itself
            # is the archive's claim: only identity rules that name what they want can hold.
            return Subject(where, base.source, None, base.root.digest)
        return Subject(where, base.source, address, base.root.digest)

    async def _layer_subject(self, spec: LoadedSpec, index: int, layer: ResolvedLayer) -> Subject:
        """A layer's named source image, resolved; the layer must be one of its layers."""
        reference = layer.spec.image
        assert reference is not None  # noqa: S101 - the caller checked
        where = str(spec.location(("layers", index, "image")))
        address = Address.of(reference)
        try:
            digest = address.digest
            locked = None
            if digest is None:
                field = ("layers", index, "image")
                locked = self.resolver.locked_tag(spec, str(reference), field)
            if locked is not None:
                digest = locked.digest  # the committed lock's, as for bases
            elif digest is None:
                digest = (await self.resolver.resolve_tag(address)).digest
            holds = await self._holds_layer(address.location, digest, layer.digest)
        except ReconcilerError as exc:
            raise TrustError(f"{where}: image {reference}: {exc}") from exc
        if not holds:
            raise TrustError(f"{where}: image {reference} has no layer {layer.digest}")
        return Subject(where, address.location, address, digest)

    def _check_bare_layer(
        self, source: PolicySource, spec: LoadedSpec, index: int, layer: ResolvedLayer
    ) -> None:
        """A layer named by digest alone: its repository's scope must not refuse it, nor ask
        for signatures a blob cannot carry."""
        assert layer.source is not None  # noqa: S101 - the caller checked
        reference = layer.source
        scope, requirements = source.policy.requirements_for(
            reference.registry, reference.repository, None
        )
        where = spec.location(("layers", index))
        if any(isinstance(r, Reject) for r in requirements):
            raise TrustError(
                f"{where}: layer {reference} is rejected by the trust policy "
                f"({source.origin}, scope {scope}: reject; no key or signature admits it)"
            )
        if not all(isinstance(r, InsecureAcceptAnything) for r in requirements):
            raise TrustError(
                f"{where}: the trust policy ({source.origin}, scope {scope}) asks for "
                f"signatures on {reference.registry}/{reference.repository}, and a blob has "
                "none: name the signed image the layer comes from (layers[].image)"
            )

    async def _holds_layer(self, location: Location, digest: Digest, layer: Digest) -> bool:
        document = await self.resolver.fetch_document(location, digest)
        manifests: list[ManifestDocument] = []
        if isinstance(document, IndexDocument):
            for entry in document.index.manifests:
                child = await self.resolver.fetch_document(location, entry.digest)
                if isinstance(child, ManifestDocument):
                    manifests.append(child)
        else:
            manifests.append(document)
        return any(layer in {d.digest for d in m.manifest.layers} for m in manifests)

    def _scope(self, source: PolicySource, subject: Subject) -> tuple[str, tuple[Requirement, ...]]:
        if subject.reference is None:  # a local store: only the policy's default applies
            return "default", tuple(source.policy.default)
        location = subject.reference.location
        return source.policy.requirements_for(
            location.authority, location.repository, subject.reference.tag, subject.digest
        )

    async def _check(self, source: PolicySource, subject: Subject) -> None:
        scope, requirements = self._scope(source, subject)
        shown = self._shown(subject)
        if any(isinstance(r, Reject) for r in requirements):
            raise TrustError(
                f"{subject.where}: {shown} is rejected by the trust policy "
                f"({source.origin}, scope {scope}: reject; no key or signature admits it)"
            )
        if all(isinstance(r, InsecureAcceptAnything) for r in requirements):
            return
        from reconciler.trust.verify import ImageIdentity, Verdict, cache_key, verify

        not_trusted = f"{subject.where}: {shown} is not trusted ({source.origin})"
        gpg = next((r for r in requirements if isinstance(r, SignedBy)), None)
        if gpg is not None:
            raise TrustError(
                f"{not_trusted}: policy scope {scope} wants a GPG signature (signedBy, "
                f"{describe_gpg_keys(gpg, source.directory)}), which reconciler cannot "
                "verify: use sigstoreSigned"
            )
        keys = {}
        for r in requirements:
            if isinstance(r, (SigstoreSigned, SigstoreAttested)):
                try:
                    keys[id(r)] = self._keys_of(r, source.directory, source.origin)
                except TrustError as exc:
                    raise TrustError(
                        f"{not_trusted}: policy scope {scope} wants the key of "
                        f"{key_source(r)}, which cannot be used: {exc}"
                    ) from None

        def keys_for(requirement: SigstoreSigned | SigstoreAttested) -> tuple[PublicKey, ...]:
            return keys[id(requirement)]

        attested = [r for r in requirements if isinstance(r, SigstoreAttested)]
        signed = [r for r in requirements if not isinstance(r, SigstoreAttested)]
        needs_signature = not all(isinstance(r, InsecureAcceptAnything) for r in signed)
        identity = self._identity(subject)
        if identity is None and (
            not needs_signature
            or all(
                isinstance(r.identity, (ExactReference, ExactRepository))
                for r in requirements
                if isinstance(r, (SigstoreSigned, SignedBy))
            )
        ):
            # A local image: attestations, and rules that name the identity they want, need
            # none of the image's own (this placeholder is never compared).
            identity = ImageIdentity("localhost", "local-image", None)
        if identity is None:
            raise TrustError(
                f"{subject.where}: {shown}: the policy ({source.origin}, scope {scope}) asks "
                "for a signature, and a local image has no registry name to match a signed "
                "identity against: use signedIdentity exactRepository or exactReference"
            )
        key = cache_key(subject.digest, requirements, image=identity, keys_for=keys_for)
        fact = hashlib.sha256(key.encode()).hexdigest()
        if self.cache.has_fact("verified", fact):
            return

        async def check() -> Verdict:
            verdict = Verdict(True, f"no signature asked for by policy scope {scope}")
            if needs_signature:
                signatures, problems = await self._signatures(subject)
                verdict = verify(
                    signed,
                    scope,
                    identity,
                    subject.digest,
                    signatures,
                    keys_for,
                    lambda: self._known_keys(source, requirements),
                )
                if not verdict.accepted and problems:
                    skipped = "; ".join(problems[:3])
                    reason = f"{verdict.reason} (malformed signatures skipped: {skipped})"
                    return Verdict(False, reason)
            if verdict.accepted and attested:
                verdict = await self._attested(subject, scope, attested, keys_for)
            if verdict.accepted:
                self.cache.put_fact("verified", fact)
            return verdict

        # Shared by every spec asking the same question this run; each names itself.
        verdict = await self._memo.get(("verify", subject.location, subject.digest, fact), check)
        if not verdict.accepted:
            raise TrustError(f"{not_trusted}: {verdict.reason}")

    async def _attested(
        self,
        subject: Subject,
        scope: str,
        wanted: Sequence[SigstoreAttested],
        keys_for: Callable[[SigstoreAttested], tuple[PublicKey, ...]],
    ) -> Verdict:
        """Each `sigstoreAttested` requirement on the subject's `.att` envelopes."""
        from reconciler.trust.attest import check_attestations
        from reconciler.trust.verify import Verdict

        try:
            envelopes = await self._envelopes(subject, {r.predicate_type for r in wanted})
        except TrustError as exc:  # a malformed .att: the verdict says so, for this spec
            return Verdict(False, str(exc))
        reasons = []
        for requirement in wanted:
            outcome = check_attestations(
                requirement,
                scope,
                subject.digest,
                envelopes.get(requirement.predicate_type, []),
                keys_for(requirement),
            )
            if not outcome.accepted:
                return Verdict(False, outcome.reason)
            reasons.append(outcome.reason)
        return Verdict(True, "; ".join(reasons))

    async def _envelopes(self, subject: Subject, types: set[str]) -> dict[str, list[bytes]]:
        """The DSSE envelopes of the subject's `.att` manifest, by predicate type (the layer's
        annotation), the newest MAX_SIGNATURES; none when it has no `.att` tag."""
        from reconciler.trust.attest import MAX_ATTESTATIONS
        from reconciler.trust.dsse import DSSE_TYPE, MAX_ENVELOPE, PREDICATE_ANNOTATION

        reader = self.stores.reader(subject.location)
        tag = tag_for(subject.digest, ATT_SUFFIX)
        try:
            async with self.stores.slot(subject.location):
                document = await reader.get_manifest(tag)
        except NotFoundError:
            return {}
        manifest = load_artifact_manifest(
            document.raw, f"attestation manifest {subject.location}:{tag}"
        )
        layers = [
            layer
            for layer in manifest.manifest.layers
            if layer.media_type == DSSE_TYPE
            and (layer.annotations or {}).get(PREDICATE_ANNOTATION) in types
            and layer.size <= MAX_ENVELOPE
        ][-MAX_ATTESTATIONS:]
        # The newest first, one at a time, within MAX_ATTESTATION_BYTES in all: a crowded or
        # hostile .att cannot make one verdict hold 64 envelopes of 4 MiB.
        out: dict[str, list[bytes]] = {}
        spent = 0
        for layer in reversed(layers):
            if spent + layer.size > MAX_ATTESTATION_BYTES:
                break
            async with self.stores.slot(subject.location):
                raw = await reader.get_blob(layer.digest, MAX_ENVELOPE)
            spent += len(raw)
            out.setdefault((layer.annotations or {})[PREDICATE_ANNOTATION], []).insert(0, raw)
        return out

    def _known_keys(self, source: PolicySource, wanted: Sequence[Requirement]) -> list[KnownKey]:
        """The keys the policy names for other requirements (unreadable ones left out: they
        only serve to name a signer), each with its key source and scope."""
        from reconciler.trust.verify import KnownKey

        scopes = [("default", source.policy.default)] + [
            ('transports.docker.""' if name == "" else name, requirements)
            for name, requirements in source.policy.transports.get("docker", {}).items()
        ]
        known: dict[str, KnownKey] = {}
        for scope, requirements in scopes:
            for requirement in requirements:
                if not isinstance(requirement, SigstoreSigned) or any(
                    requirement is w for w in wanted
                ):
                    continue
                try:
                    keys = self._keys_of(requirement, source.directory, source.origin)
                except TrustError:
                    continue
                where = f"{key_source(requirement)}, scope {scope}"
                for key in keys:
                    known.setdefault(key.fingerprint, KnownKey(key, where))
        return list(known.values())

    def _keys_of(
        self, requirement: SigstoreSigned | SigstoreAttested, directory: Path, origin: str
    ) -> tuple[PublicKey, ...]:
        known = self._keys.get((id(requirement), directory))
        if known is None:
            known = keys_of(requirement, directory, origin)
            self._keys[(id(requirement), directory)] = known
        return known

    @staticmethod
    def _identity(subject: Subject) -> ImageIdentity | None:
        """The registry name the signed identity is matched against."""
        from reconciler.trust.verify import ImageIdentity

        if subject.reference is None:
            return None
        location = subject.reference.location
        return ImageIdentity(location.authority, location.repository, subject.reference.tag)

    @staticmethod
    def _shown(subject: Subject) -> str:
        if subject.reference is None:
            return f"{subject.location}@{subject.digest.short}"
        if subject.reference.digest is not None:
            return str(subject.reference)
        return f"{subject.reference}@{subject.digest.short}"

    async def _signatures(
        self, subject: Subject
    ) -> tuple[list[tuple[bytes, SignatureEntry]], tuple[str, ...]]:
        """The (payload, entry) pairs of the subject's `.sig` manifest, the newest first read,
        and why malformed layers were skipped; none when it has no `.sig` tag."""
        reader = self.stores.reader(subject.location)
        tag = tag_for(subject.digest, SIG_SUFFIX)
        what = f"signature manifest {subject.location}:{tag}"
        try:
            async with self.stores.slot(subject.location):
                document = await reader.get_manifest(tag)
        except NotFoundError:
            return [], ()
        entries, malformed = read_signature_manifest(document.raw, what)
        problems = list(malformed)
        readable = []
        for entry in entries[-MAX_SIGNATURES:]:
            if entry.payload_size > MAX_PAYLOAD:
                problems.append(
                    f"{what}: a payload of {entry.payload_size} bytes is over the "
                    f"{MAX_PAYLOAD}-byte limit"
                )
            else:
                readable.append(entry)

        async def payload(entry: SignatureEntry) -> tuple[bytes, SignatureEntry]:
            async with self.stores.slot(subject.location):
                data = await reader.get_blob(entry.payload_digest, MAX_PAYLOAD)
            return data, entry

        return list(await asyncio.gather(*(payload(e) for e in readable))), tuple(problems)
