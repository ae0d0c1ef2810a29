"""The reporting service: read models built only from events (gRPC ``crm.reporting.v1``)."""
