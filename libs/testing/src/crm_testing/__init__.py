"""Test fixtures that cross real boundaries: NATS servers, PostgreSQL databases, gRPC services, the stack."""
