"""The demo organisation's sign-ins as tests use them (the seed itself is ``crm_gateway.seed``)."""

from __future__ import annotations

DEMO_PASSWORD = "Demo-Passw0rd!"

# One demo user holding each role.
ROLE_USERS = {
    "rm": "rm1",
    "teller": "teller1",
    "lobby_manager": "lobby",
    "team_lead": "lead1",
    "branch_head": "head",
    "executive": "exec",
    "auditor": "auditor",
    "admin": "admin",
}
