"""The ticket service: complaints, enquiries and service requests with SLA deadlines (gRPC ``crm.ticket.v1``)."""
