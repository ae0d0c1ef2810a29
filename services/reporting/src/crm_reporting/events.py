"""What the reporting service publishes: nothing — it builds read models from the other services' events
(its outbox carries only dead letters). Its consumers are in ``subscriptions``."""

PUBLISHES: tuple[str, ...] = ()
