"""The demo organisation (``CRM_DEMO=1`` / ``make demo``): two branches, three teams, one user per role."""

from __future__ import annotations

import logging

from sqlalchemy import insert

from crm_gateway.auth import hash_password
from crm_gateway.identity import IdentityStore, branches, teams, users
from crm_platform.ids import new_id
from crm_platform.outbox import utcnow

log = logging.getLogger(__name__)

BRANCHES = [("BJ001", "Beijing Chaoyang Branch", "north"), ("SH001", "Shanghai Pudong Branch", "east")]
TEAMS = [("T1", "BJ001", "Wealth team 1"), ("T2", "BJ001", "Wealth team 2"), ("T3", "SH001", "Wealth team 3")]
# username, display name, role, branch, team
USERS = [
    ("admin", "System Administrator", "admin", None, None),
    ("auditor", "Compliance Auditor", "auditor", None, None),
    ("exec", "Regional Executive", "executive", "BJ001", None),
    ("head", "Branch Head BJ001", "branch_head", "BJ001", None),
    ("lead1", "Team Lead T1", "team_lead", "BJ001", "T1"),
    ("rm1", "RM One", "rm", "BJ001", "T1"),
    ("rm2", "RM Two", "rm", "BJ001", "T1"),
    ("rm3", "RM Three", "rm", "BJ001", "T2"),
    ("teller1", "Teller One", "teller", "BJ001", "T1"),
    ("lobby", "Lobby Manager", "lobby_manager", "BJ001", None),
    ("head2", "Branch Head SH001", "branch_head", "SH001", None),
    ("rm4", "RM Four", "rm", "SH001", "T3"),
]


async def seed_demo(store: IdentityStore, password: str) -> bool:
    """Insert the demo organisation once (when no user exists); return whether it was inserted."""
    if await store.count_users() > 0:
        return False
    now = utcnow()
    password_hash = hash_password(password)
    async with store.sessions() as session, session.begin():
        await session.execute(
            insert(branches),
            [{"id": i, "name": n, "region": r, "created_at": now, "updated_at": now} for i, n, r in BRANCHES],
        )
        await session.execute(
            insert(teams),
            [{"id": i, "branch_id": b, "name": n, "created_at": now, "updated_at": now} for i, b, n in TEAMS],
        )
        await session.execute(
            insert(users),
            [
                {
                    "id": f"u-{username}" if username else new_id(),
                    "username": username,
                    "display_name": display,
                    "branch_id": branch,
                    "team_id": team,
                    "roles": role,
                    "status": "active",
                    "password_hash": password_hash,
                    "must_change_password": False,
                    "failed_logins": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for username, display, role, branch, team in USERS
            ],
        )
    log.info("seeded demo organisation", extra={"users": len(USERS)})
    return True
