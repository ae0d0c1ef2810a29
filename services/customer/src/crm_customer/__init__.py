"""The customer service: customer files, ownership and their events (gRPC ``crm.customer.v1``)."""
