"""The interaction service: contact logs (later tasks, reminders, contact plans) (gRPC ``crm.interaction.v1``)."""
