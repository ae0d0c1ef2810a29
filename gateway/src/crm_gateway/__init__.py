"""The gateway: the CRM's only HTTP door — authentication, RBAC with data scope, routes to the services."""
