"""The notification service: in-app inboxes (later deliveries, preferences, webhooks) (gRPC ``crm.notification.v1``)."""
