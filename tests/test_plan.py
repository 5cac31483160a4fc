from __future__ import annotations

from reconciler.model.desired import build_desired
from reconciler.model.observed import BlobHolder, ObservedImage, ObservedTag, Presence
from reconciler.model.plan import BlobMethod, SpecPlan, build_plan
from reconciler.model.report import RunReport, SpecReport
from reconciler.model.state import SpecState
from reconciler.oci.digest import Digest
from reconciler.oci.location import Address, registry_location
from reconciler.oci.reference import Reference
from reconciler.render import render_text
from tests.factories import digest, make_base, make_image, make_layer, make_observed, make_spec


def desired_two_targets() -> tuple:  # type: ignore[type-arg]
    spec = make_spec(
        layers=[{"ref": f"l.io/vendor/runtime@{digest(7)}"}, {"ref": f"r.io/tools/x@{digest(8)}"}],
        targets=["r.io/team/app:1", "r.io/team/app:2"],
    )
    base = make_base([make_image("amd64", [1, 2]), make_image("arm64", [1, 3], variant="v8")])
    return spec, build_desired(spec, base, [make_layer(70, spec, 0), make_layer(80, spec, 1)])


def test_everything_missing_gives_the_full_push_in_order() -> None:
    _, desired = desired_two_targets()
    dest = registry_location("r.io", "team/app")
    observed = make_observed(tuple((t, None) for t in desired.targets), ((dest, frozenset()),))
    plan = build_plan(desired, observed)
    methods = {str(a.blob.digest): a.method for a in plan.blobs}
    assert methods[digest(1)] is BlobMethod.MOUNT  # base repository, same registry
    assert methods[digest(7)] is BlobMethod.COPY  # another registry
    assert methods[digest(8)] is BlobMethod.MOUNT  # another repository, same registry
    configs = [a for a in plan.blobs if a.blob.role == "config"]
    assert len(configs) == 2 and all(a.method is BlobMethod.UPLOAD for a in configs)
    # Each blob once per destination even when both platforms use it.
    assert len(plan.blobs) == len({a.blob.digest for a in plan.blobs}) == 7
    assert [m.is_index for m in plan.manifests] == [False, False, True]
    assert [str(t.target) for t in plan.tags] == ["r.io/team/app:1", "r.io/team/app:2"]
    assert plan.bytes_to_push == 70 + sum(a.blob.size for a in configs)
    assert not plan.in_sync


def test_in_sync_tags_need_nothing() -> None:
    _, desired = desired_two_targets()
    observed = make_observed(tuple((t, desired.root.digest) for t in desired.targets), ())
    plan = build_plan(desired, observed)
    assert plan.in_sync and len(plan.in_sync_tags) == 2


def test_moved_tag_with_content_present_only_retags() -> None:
    _, desired = desired_two_targets()
    old = Digest.parse(digest(999))
    first, second = desired.targets
    dest = registry_location("r.io", "team/app")
    everything = frozenset({desired.root.digest} | {m.document.digest for m in desired.manifests})
    observed = make_observed(((first, desired.root.digest), (second, old)), ((dest, everything),))
    plan = build_plan(desired, observed)
    assert plan.blobs == () and plan.manifests == ()
    assert [(t.target, t.old, t.new) for t in plan.tags] == [(second, old, desired.root.digest)]


def test_partial_presence_pushes_only_the_rest() -> None:
    _, desired = desired_two_targets()
    dest = registry_location("r.io", "team/app")
    amd = desired.manifests[0]
    arm_blobs = {b.digest for b in desired.manifests[1].blobs}
    present = frozenset({amd.document.digest, *[b.digest for b in amd.blobs], *list(arm_blobs)[:2]})
    observed = make_observed(tuple((t, None) for t in desired.targets), ((dest, present),))
    plan = build_plan(desired, observed)
    assert [m.platform is not None and str(m.platform) for m in plan.manifests] == [
        "linux/arm64/v8",
        False,
    ]
    assert {a.blob.digest for a in plan.blobs} == arm_blobs - present
    assert plan.skipped_blobs == len(arm_blobs & present) > 0


def test_each_destination_is_planned_on_its_own() -> None:
    spec = make_spec(targets=["r.io/team/app:1", "other.io/team/app:1"], annotations={"a": "b"})
    desired = build_desired(spec, make_base([make_image("amd64", [1])], index=False), [])
    here, there = registry_location("r.io", "team/app"), registry_location("other.io", "team/app")
    observed = make_observed(
        tuple((t, None) for t in desired.targets), ((here, frozenset()), (there, frozenset()))
    )
    plan = build_plan(desired, observed)
    by_dest = {(str(a.destination), str(a.blob.digest)): a.method for a in plan.blobs}
    assert by_dest[("r.io/team/app", digest(1))] is BlobMethod.MOUNT
    assert by_dest[("other.io/team/app", digest(1))] is BlobMethod.COPY
    assert len(plan.manifests) == 2 and {t.target.location.authority for t in plan.tags} == {
        "r.io",
        "other.io",
    }
    assert Address.of(Reference.parse("r.io/team/app:1")) in desired.targets


def test_a_known_holder_turns_a_copy_into_a_mount_from_it() -> None:
    _, desired = desired_two_targets()
    dest = registry_location("r.io", "team/app")
    holder = registry_location("r.io", "team/other")
    vendor = Digest.parse(digest(7))  # from another registry: a copy, unless a holder is known
    observed = ObservedImage(
        tuple(ObservedTag(t, None) for t in desired.targets),
        (Presence(dest, frozenset(), (BlobHolder(vendor, holder),)),),
    )
    plan = build_plan(desired, observed)
    (action,) = [a for a in plan.blobs if a.blob.digest == vendor]
    assert (action.method, action.mount_from, action.source) == (
        BlobMethod.MOUNT,
        holder,
        registry_location("l.io", "vendor/runtime"),  # what a refused mount copies from
    )
    assert plan.bytes_to_push == sum(a.blob.size for a in plan.blobs if a.blob.role == "config")
    (line,) = [
        x for x in render_text(report_of(plan), verbose=True).splitlines() if str(vendor) in x
    ]
    assert "mount from team/other" in line
    # Its own source, in the same registry, is where a base layer mounts from.
    (base_layer,) = [a for a in plan.blobs if str(a.blob.digest) == digest(1)]
    assert base_layer.mount_from == base_layer.source


def test_the_root_goes_up_with_its_first_tag_per_repository() -> None:
    _, desired = desired_two_targets()
    dest = registry_location("r.io", "team/app")
    observed = make_observed(tuple((t, None) for t in desired.targets), ((dest, frozenset()),))
    plan = build_plan(desired, observed)
    first = desired.targets[0]
    assert [(m.is_index, m.via_tag) for m in plan.manifests] == [
        (False, None),
        (False, None),
        (True, first),  # the index: PUT by tag r.io/team/app:1 only, after its children
    ]
    # A tag in sync elsewhere is not the carrier: only tags that move carry the root.
    old = Digest.parse(digest(999))
    observed = make_observed(
        ((first, desired.root.digest), (desired.targets[1], old)), ((dest, frozenset()),)
    )
    (index,) = [m for m in build_plan(desired, observed).manifests if m.is_index]
    assert index.via_tag == desired.targets[1]


def report_of(plan: SpecPlan) -> RunReport:
    return RunReport((SpecReport("app.yaml", SpecState.OUT_OF_SYNC, "app", plan=plan),), False)
