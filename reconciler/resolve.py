"""Resolve a spec's sources: base manifests and configs, added layers' sizes and diff_ids.

Everything named by digest is immutable, so it is read once and cached under the state
directory; after that, resolving a base written with a tag costs one HEAD, and a base or layer
written by digest costs nothing. Within one run, each (registry, repository, tag) is asked
once, whatever the number of specs that share it.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from reconciler.cache import ContentCache, LayerFacts
from reconciler.errors import (
    DocumentError,
    NotFoundError,
    ReconcilerError,
    ResolveError,
    SpecError,
    VerificationError,
)
from reconciler.lockfile import LockedBase, LockSet, lock_path
from reconciler.memo import Memo
from reconciler.model.fanout import instances, select_tags
from reconciler.model.sources import ResolvedBase, ResolvedImage, ResolvedLayer
from reconciler.oci import mediatypes as mt
from reconciler.oci.diffid import DEFAULT_MAX_UNCOMPRESSED, DiffIdComputer, sniff_compression
from reconciler.oci.digest import Digest
from reconciler.oci.document import (
    CONFIG_SIZE_LIMIT,
    ConfigDocument,
    Document,
    IndexDocument,
    ManifestDocument,
    parse_config,
    parse_document,
)
from reconciler.oci.location import Address, Location
from reconciler.oci.models import Descriptor
from reconciler.oci.platform import UNKNOWN_PLATFORM
from reconciler.spec import LayerSpec, LoadedSpec
from reconciler.store.base import ManifestHead, NamedImages
from reconciler.store.open import Stores

SNIFF_BYTES = 512


class Resolver:
    """Reads sources through the cache. One per run; safe to share across specs."""

    def __init__(
        self,
        stores: Stores,
        cache: ContentCache,
        max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
        locks: LockSet | None = None,
        *,
        require_locks: bool = False,
    ) -> None:
        self.stores = stores
        self.require_locks = require_locks  # base_policy locked: a spec no lock covers fails
        self.cache = cache
        self.max_uncompressed = max_uncompressed
        self.locks = locks  # with a lock in a spec's directory, its base tags come from there
        self._memo = Memo()
        # Content that passed its digest check, shared by digest across sources. A failure is
        # remembered per source only: a damaged copy in one store never fails a spec that
        # reads the same digest from another.
        self._verified: dict[Digest, Document | ConfigDocument] = {}
        self._verified_layers: dict[tuple[Digest, str | None, Digest | None], LayerFacts] = {}

    async def resolve_tag(self, address: Address) -> ManifestHead:
        """What a base tag names now: one HEAD per (store, tag) per run."""
        location = address.location

        async def head() -> ManifestHead:
            store = self.stores.reader(location)
            async with self.stores.slot(location):
                found = await store.head_manifest(address.identifier)
            if found is None:
                raise NotFoundError(await self._missing(address))
            return found

        return await self._memo.get(("tag", location, address.identifier), head)

    async def _missing(self, address: Address) -> str:
        """Why a tag named nothing: the repository is not there, or it has no such tag (with
        the closest it has). A HEAD's 404 has no body to say which, and registries answer a
        manifest GET of an unknown repository with MANIFEST_UNKNOWN too: the tag list (404
        NAME_UNKNOWN, or the tags) says, one request on this failure only."""
        import difflib

        location = address.location
        what = f"{address} not found"
        if not location.is_registry or address.tag is None:
            return what
        try:
            async with self.stores.slot(location):
                tags = await self.stores.reader(location).list_tags(limit=10_000)
        except ReconcilerError:
            return what
        if not tags:
            return f"{what}: {location.authority} has no repository {location.repository}"
        close = difflib.get_close_matches(address.tag, tags, n=3, cutoff=0.6)
        count = f"{len(tags)} tag{'s' if len(tags) != 1 else ''}"
        hint = f" (closest: {', '.join(close)})" if close else f" ({count}, none close)"
        return f"{what}: {location.repository} has no tag {address.tag}{hint}"

    async def fetch_document(self, source: Location, digest: Digest) -> Document:
        """A manifest or index by digest: from this run, else the cache, else its store."""

        async def load() -> Document:
            cached = self.cache.get_document(digest)
            if cached is not None:
                return parse_document(cached[0], cached[1], digest, what=f"cached {digest}")
            async with self.stores.slot(source):
                document = await self.stores.reader(source).get_manifest(str(digest))
            self.cache.put_document(digest, document.raw, document.media_type)
            return document

        known = self._verified.get(digest)
        if isinstance(known, (ManifestDocument, IndexDocument)):
            return known
        document = await self._memo.get(("document", source, digest), load)
        self._verified[digest] = document
        return document

    async def fetch_config(self, source: Location, descriptor: Descriptor) -> ConfigDocument:
        """An image config by digest: from this run, else the cache, else its store."""
        digest = descriptor.digest

        async def load() -> ConfigDocument:
            cached = self.cache.get_document(digest)
            if cached is not None:
                return parse_config(cached[0], descriptor.media_type, digest)
            async with self.stores.slot(source):
                raw = await self.stores.reader(source).get_blob(digest, CONFIG_SIZE_LIMIT)
            try:
                config = parse_config(raw, descriptor.media_type, digest)
            except DocumentError as exc:
                raise DocumentError(f"{source}: {exc}") from None
            self.cache.put_document(digest, raw, descriptor.media_type)
            return config

        known = self._verified.get(digest)
        if not isinstance(known, ConfigDocument):
            known = await self._memo.get(("config", source, digest), load)
            self._verified[digest] = known
        if len(known.raw) != descriptor.size:  # whoever read it first, this descriptor may lie
            raise DocumentError(
                f"{source}: config {digest} is {len(known.raw)} bytes, its descriptor says "
                f"{descriptor.size}"
            )
        return known

    async def resolve_base(self, spec: LoadedSpec) -> ResolvedBase | None:
        address = spec.base_address()
        if address is None:
            return None
        if not address.location.is_registry:
            return await self._resolve_local(spec, address)
        label = str(address)
        if address.digest is not None:
            return await self._resolve_root(spec, address.location, label, label, address.digest)
        locked = self.locked_base(spec)
        if locked is not None:
            return await self._resolve_root(spec, address.location, label, label, locked.digest)
        head = await self.resolve_tag(address)
        return await self._resolve_root(
            spec, address.location, label, label, head.digest, head.size
        )

    @staticmethod
    def _no_lock(spec: LoadedSpec) -> str:
        return (
            f"base_policy is locked and no lock covers this spec (no {lock_path(spec.file)}); "
            "run `reconciler lock` and commit it, or set base_policy: auto"
        )

    def locked_base(self, spec: LoadedSpec) -> LockedBase | None:
        """The lock entry of a spec's base tag; None when no lock covers its directory. A lock
        that does not cover the base is the spec's error (the lock must be written again)."""
        return self.locked_tag(spec, spec.body.base, ("base",))

    def locked_tag(
        self, spec: LoadedSpec, reference: str, field: tuple[str | int, ...]
    ) -> LockedBase | None:
        """The lock entry of a tag the spec names at `field` (its base, a layer's image);
        None when no lock covers the spec's directory; an error when the lock lacks it."""
        if self.locks is None:
            return None
        try:
            lock = self.locks.for_spec(spec.file)
        except SpecError as exc:
            raise ResolveError(f"{spec.location(field)}: {exc}") from exc
        if lock is None:
            if self.require_locks:
                raise ResolveError(f"{spec.location(field)}: {self._no_lock(spec)}")
            return None
        entry = lock.get(reference)
        if entry is None:
            raise ResolveError(
                f"{spec.location(field)}: {reference} is not in {lock.path}; "
                "run `reconciler lock` and commit the lock"
            )
        return entry

    async def fan_out(self, spec: LoadedSpec) -> tuple[LoadedSpec, ...]:
        """A fan-out spec's instances, one per selected base tag: the selection the lock keeps
        when one covers the spec, else the base repository's tags now (one listing per run)."""
        where = spec.location(("baseTags",))
        if self.locks is not None:
            try:
                lock = self.locks.for_spec(spec.file)
            except SpecError as exc:
                raise ResolveError(f"{where}: {exc}") from exc
            if lock is None and self.require_locks:
                raise ResolveError(f"{where}: {self._no_lock(spec)}")
            if lock is not None:
                chosen = lock.selection(spec.name)
                if chosen is None:
                    raise ResolveError(
                        f"{where}: the tags {spec.name} fans out over are not in {lock.path}; "
                        "run `reconciler lock` and commit the lock"
                    )
                if not chosen.tags:
                    raise ResolveError(f"{where}: {lock.path} selects no tag for {spec.name}")
                return instances(spec, chosen.tags)
        tags = await self.select_tags(spec)
        if not tags:
            raise ResolveError(f"{where}: no tag of {spec.body.base} is selected")
        return instances(spec, tags)

    async def select_tags(self, spec: LoadedSpec) -> tuple[str, ...]:
        """The tags of a fan-out spec's base repository that its baseTags select, now."""
        selection = spec.body.base_tags
        address = spec.base_address()
        assert selection is not None and address is not None  # noqa: S101 - fans_out
        location = address.location

        async def listing() -> list[str]:
            async with self.stores.slot(location):
                return await self.stores.reader(location).list_tags()

        try:
            listed = await self._memo.get(("tags", location), listing)
        except ReconcilerError as exc:
            raise ResolveError(f"{spec.location(('base',))}: listing tags: {exc}") from exc
        return select_tags(listed, selection)

    async def base_moved(self, spec: LoadedSpec) -> Digest | None:
        """The digest a locked base tag names now, when it is not the locked one (one HEAD per
        tag per run, shared with every spec on that base)."""
        address = spec.base_tag()
        if address is None:
            return None
        locked = self.locked_base(spec)
        if locked is None:
            return None
        head = await self.resolve_tag(address)
        return head.digest if head.digest != locked.digest else None

    async def _resolve_local(self, spec: LoadedSpec, address: Address) -> ResolvedBase:
        """A base read from an OCI layout or a docker-save archive (paths from the spec file)."""
        location = address.location
        written = spec.body.base
        where = spec.location(("base",))
        try:
            if not Path(location.authority).exists():
                raise NotFoundError(f"base {written}: {location.authority} does not exist")
            store = self.stores.reader(location)
            head = await self._memo.get(
                ("tag", location, address.identifier),
                lambda: store.head_manifest(address.identifier),
            )
            if head is None:
                tags = ", ".join(await store.list_tags()) or "none"
                raise NotFoundError(
                    f"base {written}: no image {address.identifier!r} there (tags: {tags})"
                )
            name = None
            if isinstance(store, NamedImages):
                name = await asyncio.to_thread(store.base_name, address.identifier)
            return await self._resolve_root(spec, location, name, written, head.digest, head.size)
        except (ReconcilerError, OSError) as exc:
            raise ResolveError(f"{where}: {exc}") from exc

    async def _resolve_root(
        self,
        spec: LoadedSpec,
        source: Location,
        name: str | None,
        label: str,
        digest: Digest,
        size: int | None = None,
    ) -> ResolvedBase:
        root = await self.fetch_document(source, digest)
        if size is not None and size != len(root.raw):
            raise DocumentError(
                f"{source}: manifest {digest} is {len(root.raw)} bytes, but {size} were announced"
            )
        wanted = spec.body.platforms
        if isinstance(root, ManifestDocument):
            image = await self._image(source, root, None)
            if wanted and not any(p.matches(image.platform) for p in wanted):
                raise ResolveError(
                    f"{spec.location(('platforms',))}: base {label} is a single "
                    f"{image.platform} image; it has none of {', '.join(map(str, wanted))}"
                )
            return ResolvedBase(source, name, label, root, (image,))
        return await self._resolve_index(spec, source, name, label, root)

    async def _resolve_index(
        self,
        spec: LoadedSpec,
        source: Location,
        name: str | None,
        label: str,
        root: IndexDocument,
    ) -> ResolvedBase:
        wanted = spec.body.platforms
        selected: list[Descriptor] = []
        attachments: list[Descriptor] = []
        runnable = 0
        for entry in root.index.manifests:
            if entry.media_type not in mt.MANIFEST_TYPES:
                raise ResolveError(
                    f"base {label}: index entry {entry.digest} is a {entry.media_type}; "
                    "nested indexes are not supported"
                )
            key = entry.platform.key() if entry.platform else None
            if key is None or key == UNKNOWN_PLATFORM:
                attachments.append(entry)
                continue
            runnable += 1
            if wanted is None or any(p.matches(key) for p in wanted):
                selected.append(entry)
        if wanted:
            for platform in wanted:
                if not any(
                    e.platform is not None and platform.matches(e.platform.key()) for e in selected
                ):
                    available = sorted(
                        {str(e.platform) for e in root.index.manifests if e.platform}
                    )
                    raise ResolveError(
                        f"{spec.location(('platforms',))}: base {label} has no {platform} "
                        f"(it has {', '.join(available) or 'no platforms'})"
                    )
        if not selected:
            raise ResolveError(f"base {label} is an index with no runnable image")
        images = await asyncio.gather(
            *(self._image_from_entry(source, label, entry) for entry in selected)
        )
        attached = await asyncio.gather(
            *(self._manifest_from_entry(source, label, entry) for entry in attachments)
        )
        return ResolvedBase(
            source,
            name,
            label,
            root,
            tuple(images),
            tuple(zip(attachments, attached, strict=True)),
            filtered=len(selected) < runnable,
        )

    async def _manifest_from_entry(
        self, source: Location, label: str, entry: Descriptor
    ) -> ManifestDocument:
        document = await self.fetch_document(source, entry.digest)
        if not isinstance(document, ManifestDocument):
            raise DocumentError(f"index entry {entry.digest} of {label} is not a manifest")
        if len(document.raw) != entry.size:
            raise DocumentError(
                f"index entry {entry.digest.short} of {label} says {entry.size} bytes; "
                f"the manifest is {len(document.raw)}"
            )
        return document

    async def _image_from_entry(
        self, source: Location, label: str, entry: Descriptor
    ) -> ResolvedImage:
        document = await self._manifest_from_entry(source, label, entry)
        return await self._image(source, document, entry)

    async def _image(
        self, source: Location, document: ManifestDocument, entry: Descriptor | None
    ) -> ResolvedImage:
        config = await self.fetch_config(source, document.manifest.config)
        return ResolvedImage(document, config, entry)

    async def resolve_layer(self, spec: LoadedSpec, index: int) -> ResolvedLayer:
        layer = spec.body.layers[index]
        if layer.path is not None:
            return await self._build_local(spec, index)
        source = layer.source
        digest = layer.layer_digest
        where = spec.location(("layers", index))
        try:
            # What a lookup learns depends on what the spec declares (a given diffID skips
            # the streamed pass), so specs that declare differently do not share one answer.
            key = (digest, layer.media_type, layer.diff_id)
            known = self._verified_layers.get(key)
            if known is None:
                known = await self._memo.get(
                    ("layer", Location.of(source), *key), lambda: self._layer_facts(layer)
                )
                self._verified_layers[key] = known
            facts: LayerFacts = known
        except ReconcilerError as exc:
            raise ResolveError(f"{where}: layer {source}: {exc}") from exc
        declared = mt.compression_of(layer.media_type) if layer.media_type else None
        compression = facts.compression or declared
        if declared is not None and compression is not declared:
            raise ResolveError(f"{where}: mediaType says {declared} but the blob is {compression}")
        diff_id = layer.diff_id or facts.diff_id
        if compression is None or diff_id is None:
            raise ResolveError(f"{where}: could not determine the layer's compression and diffID")
        if layer.diff_id and facts.diff_id and layer.diff_id != facts.diff_id:
            raise ResolveError(
                f"{where}: diffID {layer.diff_id} disagrees with the content ({facts.diff_id})"
            )
        return ResolvedLayer(layer, source, digest, facts.size, compression, diff_id)

    async def _build_local(self, spec: LoadedSpec, index: int) -> ResolvedLayer:
        """A `path:` layer: built reproducibly into the state directory, once per run."""
        layer = spec.body.layers[index]
        assert layer.path is not None  # noqa: S101 - the caller checked
        source = (Path(spec.file).parent / layer.path).absolute()
        out_dir = self.cache.root / "built"
        from reconciler.archive.layer import build_layer  # tar and gzip: for path layers only

        try:
            built = await self._memo.get(
                ("path", str(source)), lambda: asyncio.to_thread(build_layer, source, out_dir)
            )
        except (ReconcilerError, OSError) as exc:
            where = spec.location(("layers", index, "path"))
            raise ResolveError(f"{where}: {exc}") from exc
        return ResolvedLayer(
            layer, None, built.digest, built.size, mt.Compression.GZIP, built.diff_id, built.file
        )

    async def _layer_facts(self, layer: LayerSpec) -> LayerFacts:
        """Size from a HEAD; compression and diff_id from one streamed pass, unless known."""
        digest = layer.layer_digest
        cached = self.cache.get_layer(digest)
        declared = mt.compression_of(layer.media_type) if layer.media_type else None
        if (
            cached is not None
            and (cached.diff_id or layer.diff_id)
            and (cached.compression or declared)
        ):
            return cached
        source = Location.of(layer.source)
        async with self.stores.slot(source):
            size = await self.stores.reader(source).head_blob(digest)
        if size is None:
            raise NotFoundError(f"blob {digest} not found in {source}")
        if declared is mt.Compression.NONE:
            facts = LayerFacts(size, declared, digest)
        elif layer.diff_id is not None and declared is not None:
            facts = LayerFacts(size, declared, None)
        else:
            async with self.stores.slot(source):
                facts = await self.stores.retry.run(
                    lambda: self._stream_facts(layer, size), f"diff_id pass over {digest.short}"
                )
        self.cache.put_layer(digest, facts)
        return facts

    async def _stream_facts(self, layer: LayerSpec, size: int) -> LayerFacts:
        """One pass over the blob: sniff the compression, then hash the uncompressed tar.

        Pipelined: while a worker thread inflates and hashes one chunk (zlib and hashlib let go
        of the GIL), the event loop receives the next one and hashes it against the blob's
        digest; at most one chunk waits.
        """
        store = self.stores.reader(Location.of(layer.source))
        computer: DiffIdComputer | None = None
        head = bytearray()
        pending: asyncio.Future[None] | None = None
        async with store.open_blob(layer.layer_digest, size) as stream:
            try:
                async for chunk in stream:
                    if computer is None:
                        head += chunk
                        if len(head) < SNIFF_BYTES and len(head) < size:
                            continue
                        computer = self._computer(layer, bytes(head))
                        if computer is None:
                            return LayerFacts(size, mt.Compression.ZSTD, None)
                        data, head = bytes(head), bytearray()
                    else:
                        data = chunk
                    if pending is not None:
                        await pending
                    pending = asyncio.ensure_future(asyncio.to_thread(computer.feed, data))
                if pending is not None:
                    await pending
            except VerificationError as exc:
                if exc.retryable:
                    raise  # the bytes did not match their digest: corrupted in transit
                # Bad gzip may also be bytes damaged on the way: read on, and let the digest
                # check (retryable) speak first; only bytes that match it make the layer bad.
                async for _chunk in stream:
                    pass
                raise
            finally:
                if pending is not None and not pending.done():
                    with contextlib.suppress(Exception):
                        await pending  # the worker finishes its chunk before we leave
        if computer is None:
            raise VerificationError("blob is empty: not a layer")
        return LayerFacts(size, computer.compression, computer.finish())

    def _computer(self, layer: LayerSpec, head: bytes) -> DiffIdComputer | None:
        """A diff_id computer for this layer; None for zstd whose diffID the spec gives."""
        compression = sniff_compression(head)
        if compression is None:
            raise VerificationError("blob is not a tar, tar+gzip or tar+zstd layer")
        if compression is mt.Compression.ZSTD and layer.diff_id is not None:
            return None
        return DiffIdComputer(compression, self.max_uncompressed)
