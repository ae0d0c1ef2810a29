"""The demo organisation (``CRM_DEMO=1`` / ``make demo``): two branches with their heads, three teams (``lead1``
leads T1), one user per role."""

from __future__ import annotations

import logging

from sqlalchemy import insert

from crm_gateway.auth import hash_password
from crm_gateway.identity import IdentityStore, branches, teams, users
from crm_platform.outbox import utcnow

log = logging.getLogger(__name__)

# code, name, region, head (a username below)
BRANCHES = [
    ("BJ001", "Beijing Chaoyang Branch", "north", "head"),
    ("SH001", "Shanghai Pudong Branch", "east", "head2"),
]
# code, branch, name, lead (a username below, or None)
TEAMS = [
    ("T1", "BJ001", "Wealth team 1", "lead1"),
    ("T2", "BJ001", "Wealth team 2", None),
    ("T3", "SH001", "Wealth team 3", None),
]
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


def _user_id(username: str | None) -> str | None:
    """The demo users' ids are readable: ``u-<username>``."""
    return f"u-{username}" if username else None


async def seed_demo(store: IdentityStore, password: str) -> bool:
    """Insert the demo organisation once (when no user exists); return whether it was inserted."""
    if await store.count_users() > 0:
        return False
    now = utcnow()
    password_hash = hash_password(password)
    async with store.sessions() as session, session.begin():
        await session.execute(
            insert(branches),
            [
                {"id": i, "name": n, "region": r, "head_id": _user_id(h), "created_at": now, "updated_at": now}
                for i, n, r, h in BRANCHES
            ],
        )
        await session.execute(
            insert(teams),
            [
                {"id": i, "branch_id": b, "name": n, "lead_id": _user_id(lead), "created_at": now, "updated_at": now}
                for i, b, n, lead in TEAMS
            ],
        )
        await session.execute(
            insert(users),
            [
                {
                    "id": _user_id(username),
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
