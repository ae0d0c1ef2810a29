"""Tags on customers (高净值, 潜力客户 …)."""

from __future__ import annotations

from crm_customer.domain.customer import Customer
from crm_platform.validation import collect

MAX_TAGS = 30
TAG_LENGTH = 20


def retag(customer: Customer, add: list[str], remove: list[str]) -> tuple[tuple[str, ...], list[str], list[str]]:
    """The customer's tags after adding ``add`` and removing ``remove``: (tags, really added, really removed)."""
    with collect() as v:
        clean_add = [t.strip() for t in add]
        clean_remove = [t.strip() for t in remove]
        if not clean_add and not clean_remove:
            v.add("add", "names no tag to add or remove")
        for name, tags in (("add", clean_add), ("remove", clean_remove)):
            if any(not t or len(t) > TAG_LENGTH or "," in t for t in tags):
                v.add(name, f"tags are 1 to {TAG_LENGTH} characters without commas")
        result = sorted((set(customer.tags) | set(clean_add)) - set(clean_remove))
        if len(result) > MAX_TAGS:
            v.add("add", f"a customer carries at most {MAX_TAGS} tags")
    added = sorted(set(result) - set(customer.tags))
    removed = sorted(set(customer.tags) - set(result))
    return tuple(result), added, removed
