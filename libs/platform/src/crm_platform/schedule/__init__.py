"""Scheduled work that happens exactly once: reminders, SLA warnings, anything due at a time.

A service writes an item in its own transaction (:meth:`Scheduler.schedule`, like ``Outbox.add``): a kind (which
handler runs it), a key (one row per key: ``reminder:<task_id>``, ``sla-warning:<ticket_id>:<level>``), a due
time and a JSON payload. Scheduling a key again replaces the item and bumps its version; only the newest
version ever runs. :meth:`Scheduler.cancel` withdraws a pending item.

One :class:`ScheduleRunner` per process runs the items when due, with any number of replicas on one database:
each pass claims a batch (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and runs every item's handler, marks them
done and commits, all in one transaction, so an item's effects (its own rows and its outbox events) and its
done-mark commit together. A process killed at any point before that commit leaves the items pending, to be
run by another replica or after the restart; once it has committed, the item never runs again. A failed run is
rolled back to its savepoint and retried with exponential back-off, then marked ``dead`` with its error.

The table (:data:`scheduled_items`, in its own :data:`schedule_metadata`) is created by a service's migration
with :func:`create_schedule_tables`.
"""

from crm_platform.schedule.runner import Handler, ScheduledItem, ScheduleRunner, UnknownKind, describe_error
from crm_platform.schedule.scheduler import Notify, Scheduler, encode_payload
from crm_platform.schedule.table import (
    CANCELLED,
    DEAD,
    DONE,
    PENDING,
    create_schedule_tables,
    drop_schedule_tables,
    schedule_metadata,
    scheduled_items,
)

__all__ = [
    "CANCELLED",
    "DEAD",
    "DONE",
    "PENDING",
    "Handler",
    "Notify",
    "ScheduleRunner",
    "ScheduledItem",
    "Scheduler",
    "UnknownKind",
    "create_schedule_tables",
    "describe_error",
    "drop_schedule_tables",
    "encode_payload",
    "schedule_metadata",
    "scheduled_items",
]
