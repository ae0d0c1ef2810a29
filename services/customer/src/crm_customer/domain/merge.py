"""Merging a duplicate customer file into a survivor (the same person or company entered twice).

The rules, in the bank's words:

* Both files must be in the caller's scope (the store answers NOT_FOUND otherwise), distinct, of the same
  kind, and neither erased nor already merged.
* They must be able to be the same customer: two ID numbers **of the same ID type** that differ, or two credit
  codes that differ, mean two people (companies). Different ID types (a passport on one file, a resident ID
  on the other) are the typical duplicate and are allowed; the reason given says why staff believe it.
* The survivor keeps every value it has, and its owner. Its empty fields take the duplicate's values; fields
  that only mean something together move together (ID type and number; income and currency; risk appetite and
  its assessment dates). The survivor's VIP tier is never taken from the duplicate (tiers come from signing),
  and a do-not-disturb wish on either file holds for the survivor. The filled file is validated whole: if the
  two files contradict each other (a resident ID whose birth date is not the survivor's), nothing is merged.
* Tags are unioned. Holdings of the duplicate move to the survivor for products the survivor does not hold;
  a product both hold stays with the duplicate (core banking reported it under both files: counting it twice
  would double the AUM, and the survivor's row is the one its next snapshot replaces).
* The duplicate keeps its row and its non-lookup facts, marked ``merged_into`` the survivor; its lookup values
  (ID number and mobile hashes, credit code) are dropped so it leaves searches and duplicate detection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crm_customer.domain.customer import (
    PROFILE_FIELDS,
    Customer,
    FieldChange,
    Profile,
    profile_as_raw,
    require,
    revise_profile,
)
from crm_customer.domain.holdings import Holding
from crm_customer.domain.tags import MAX_TAGS
from crm_platform.auth_context import Identity
from crm_platform.errors import Conflict, FailedPrecondition, InvalidArgument
from crm_platform.validation import collect

MERGE_PERMISSION = "customer:merge"
REASON_LENGTH = 500

# Fields that are filled together or not at all: the first names the group and decides whether it is empty.
_FILL_GROUPS = (
    ("id_number", "id_type"),
    ("annual_income", "annual_income_currency"),
    ("risk_appetite", "risk_assessed_on", "risk_expires_on"),
)
# Never filled from the duplicate: the name (always set), the tier (from signing), do-not-disturb (OR-ed).
_NOT_FILLED = frozenset({"name", "tier", "do_not_disturb"})


@dataclass(frozen=True)
class MergePlan:
    """What a merge changes: both files after it, the survivor's filled fields (masked), the tags it gains."""

    survivor: Customer
    duplicate: Customer
    filled: list[FieldChange]
    tags_added: tuple[str, ...]

    @property
    def filled_fields(self) -> list[str]:
        """The names of the survivor's filled fields (and ``tags`` when it gained some), never their values."""
        return [c.field for c in self.filled] + (["tags"] if self.tags_added else [])


def check_merge_request(survivor_id: str, duplicate_id: str, reason: str) -> None:
    """The request's own rules, checked before either file is read: ids given and distinct, a bounded reason."""
    with collect() as v:
        if not survivor_id.strip():
            v.add("survivor_id", "is required")
        if not duplicate_id.strip():
            v.add("duplicate_id", "is required")
        elif duplicate_id.strip() == survivor_id.strip():
            v.add("duplicate_id", "must name another customer than the survivor")
        if not reason.strip() or len(reason.strip()) > REASON_LENGTH:
            v.add("reason", f"is required, at most {REASON_LENGTH} characters")


def _empty(value: object) -> bool:
    return value is None or value == "" or value == ()


def _fillable(survivor: Profile, duplicate: Profile) -> dict[str, object]:
    """The duplicate's values for the survivor's empty fields, in the raw form validation takes."""
    mine, theirs = profile_as_raw(survivor), profile_as_raw(duplicate)
    grouped = {name for group in _FILL_GROUPS for name in group}
    updates: dict[str, object] = {}
    for group in _FILL_GROUPS:
        lead = group[0]
        if _empty(mine[lead]) and not _empty(theirs[lead]):
            updates.update({name: theirs[name] for name in group})
    for name in PROFILE_FIELDS:
        if name in grouped or name in _NOT_FILLED:
            continue
        if _empty(mine[name]) and not _empty(theirs[name]):
            updates[name] = theirs[name]
    if duplicate.do_not_disturb and not survivor.do_not_disturb:
        updates["do_not_disturb"] = True  # the customer asked on one file: the wish holds for the person
    return updates


def _check_same_customer(survivor: Customer, duplicate: Customer) -> None:
    for customer, who in ((survivor, "survivor"), (duplicate, "duplicate")):
        if customer.erased_at is not None:
            raise FailedPrecondition(f"the {who} was erased and cannot be merged", reason="ERASED")
        if customer.merged_into:
            raise FailedPrecondition(
                f"the {who} was already merged into customer {customer.merged_into}", reason="ALREADY_MERGED"
            )
    if survivor.kind != duplicate.kind:
        raise FailedPrecondition(
            f"a {duplicate.kind.value} customer cannot be merged into a {survivor.kind.value} one",
            reason="KIND_MISMATCH",
        )
    s, d = survivor.profile, duplicate.profile
    if s.id_number and d.id_number and s.id_type == d.id_type and s.id_number != d.id_number:
        raise FailedPrecondition(
            "the two files carry different ID numbers of the same ID type: they are not the same person",
            reason="DIFFERENT_ID_NUMBER",
        )
    if s.credit_code and d.credit_code and s.credit_code != d.credit_code:
        raise FailedPrecondition(
            "the two files carry different unified social credit codes: they are not the same company",
            reason="DIFFERENT_CREDIT_CODE",
        )


def plan_merge(
    identity: Identity,
    survivor: Customer,
    duplicate: Customer,
    expected_survivor_version: int,
    expected_duplicate_version: int,
    now: dt.datetime,
) -> MergePlan:
    """Decide a merge of ``duplicate`` into ``survivor`` (both already known to be in the caller's scope).

    Raises :class:`Conflict` when an expected version (0 = not checked) is stale, :class:`FailedPrecondition`
    when the files cannot be merged (see the module's rules).
    """
    require(identity, MERGE_PERMISSION)
    for who, customer, expected in (
        ("survivor", survivor, expected_survivor_version),
        ("duplicate", duplicate, expected_duplicate_version),
    ):
        if expected and customer.version != expected:
            raise Conflict(f"the {who} {customer.id} is at version {customer.version}, not {expected}")
    _check_same_customer(survivor, duplicate)
    try:
        profile, filled = revise_profile(survivor, _fillable(survivor.profile, duplicate.profile), now.date())
    except InvalidArgument as exc:
        fields = ", ".join(dict.fromkeys(x.field for x in exc.violations))
        raise FailedPrecondition(
            f"the two files contradict each other ({fields}): check they are the same customer",
            reason="MERGE_CONFLICT",
        ) from None
    tags = tuple(sorted(set(survivor.tags) | set(duplicate.tags)))
    if len(tags) > MAX_TAGS:
        raise FailedPrecondition(
            f"together the files carry {len(tags)} tags, more than {MAX_TAGS}: remove some first",
            reason="TOO_MANY_TAGS",
        )
    tags_added = tuple(t for t in tags if t not in survivor.tags)
    survivor_after = dataclasses.replace(
        survivor, profile=profile, tags=tags, version=survivor.version + 1, updated_at=now
    )
    # The credit code is a lookup value (unique among live files): the duplicate gives it up.
    duplicate_after = dataclasses.replace(
        duplicate,
        profile=dataclasses.replace(duplicate.profile, credit_code=""),
        merged_into=survivor.id,
        merged_at=now,
        version=duplicate.version + 1,
        updated_at=now,
    )
    return MergePlan(survivor_after, duplicate_after, filled, tags_added)


def holdings_to_move(survivor: Iterable[Holding], duplicate: Sequence[Holding]) -> list[Holding]:
    """The duplicate's holdings of products the survivor does not hold (those move; the others stay)."""
    held = {h.product_code for h in survivor}
    return [h for h in duplicate if h.product_code not in held]
