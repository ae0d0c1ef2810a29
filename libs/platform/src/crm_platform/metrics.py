"""Prometheus metrics shared by every part, and the metrics HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

GRPC_REQUESTS = Counter(
    "crm_grpc_server_requests", "gRPC calls handled, by final status code.", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "crm_grpc_server_request_seconds", "gRPC call latency.", ["service", "method"], buckets=_LATENCY_BUCKETS
)
HTTP_REQUESTS = Counter("crm_http_requests", "HTTP requests handled.", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "crm_http_request_seconds", "HTTP request latency.", ["method", "route"], buckets=_LATENCY_BUCKETS
)
OUTBOX_BACKLOG = Gauge(
    "crm_outbox_backlog", "Outbox rows committed but not yet published (a bundle of up to 1,000 events counts once)."
)
OUTBOX_OLDEST_AGE = Gauge("crm_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event.")
OUTBOX_PUBLISHED = Counter("crm_outbox_published", "Outbox events published to JetStream.")
OUTBOX_PUBLISH_ERRORS = Counter("crm_outbox_publish_errors", "Failed attempts to publish an outbox batch.")
EVENT_LATENCY = Histogram(
    "crm_event_delivery_seconds",
    "Time from the event's commit to its handler's commit, per consumer.",
    ["consumer"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_HANDLED = Counter("crm_consumer_handled", "Events handled by a consumer, by outcome.", ["consumer", "outcome"])
CONSUMER_REDELIVERIES = Counter("crm_consumer_redeliveries", "Events delivered more than once.", ["consumer"])
CONSUMER_DEAD_LETTERED = Counter("crm_consumer_dead_lettered", "Events sent to the dead-letter subject.", ["consumer"])
CONSUMER_LAG = Gauge("crm_consumer_lag", "Messages pending for a durable consumer.", ["consumer"])
DB_POOL_IN_USE = Gauge("crm_db_pool_in_use", "Database connections checked out of the pool.")


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve the default registry over HTTP on ``port`` (any path) in a daemon thread."""
    start_http_server(port, addr=host)


# The scheduled work of crm_platform.schedule (refreshed at most once a second by each runner).
SCHEDULE_BACKLOG = Gauge("crm_schedule_backlog", "Scheduled items pending and already due.")
SCHEDULE_OLDEST_DUE_AGE = Gauge(
    "crm_schedule_oldest_due_age_seconds", "Seconds since the due time of the oldest pending item already due."
)
SCHEDULE_DEAD = Gauge("crm_schedule_dead", "Scheduled items given up after their last attempt (status dead).")
SCHEDULE_LATENESS = Histogram(
    "crm_schedule_lateness_seconds",
    "Time from a scheduled item's due time to the commit of its run, per kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
)
SCHEDULE_RUNS = Counter(
    "crm_schedule_runs", "Runs of scheduled items, by kind and outcome (done, retry, dead).", ["kind", "outcome"]
)
