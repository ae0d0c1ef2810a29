"""Customer service at scale through the gateway on PostgreSQL (issue #4, "Performance").

Two processes as in production (``python -m crm_customer`` on a scratch database ``crm_bench_<hex>``, and
``python -m crm_gateway`` with one uvicorn worker, the demo users and the per-user rate limit lifted), then:

1. **Create.** ``wrk -t2 -c32`` posts ``POST /api/v1/customers`` as rm1 for ``CREATE_SECONDS`` after a short
   warm-up; a Lua script makes every body unique and valid (a resident ID number with its GB 11643 check
   character and the birth date it holds, a unique mainland mobile), so every request does the real work:
   validation at the gateway and in the service, the duplicate checks by keyed hash, a data key, AES-GCM of
   ID number and mobile, the customer, key, history and outbox rows in one transaction, and the relay
   publishing to JetStream. Only ``201`` counts.
2. **Seed.** ``SEED_ROWS`` customers are loaded with ``COPY`` (asyncpg ``copy_records_to_table``) by
   ``SEED_WORKERS`` processes, each row as the service writes it: a data key per customer wrapped by the
   service's master key, ID number and mobile AES-GCM encrypted under it, their keyed lookup hashes, a tier,
   risk appetite, owner, team, branch, region, created and last-contact times, and a tag on 5 % of them.
   The secondary indexes of the migrations are dropped for the load and re-created from their own
   definitions (``pg_indexes``) afterwards, then ``ANALYZE``. Data set: 20 branches of 50,000 customers,
   4 teams of 10 RMs per branch (≈ 1,250 customers per RM), 5 % in the branch pool; BJ001 holds the demo
   users' customers (rm1, rm2 in T1; rm3 in T2).
3. **Lists and searches.** For each query of ``QUERIES`` (one role, one URL), ``wrk -t1 -c4`` for
   ``QUERY_SECONDS``; p50/p99 from wrk's histogram. Each answer is checked once first (200, the expected
   number of items) so a fast error page cannot pass for a fast list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import Row, Section, pg_dsn, progress, scratch_database
from bench.gateway import (
    LUA,
    _cpu_seconds,
    _machine_busy,
    _processes_cpu_seconds,
    _request,
    _started,
    _until,
    _wrk,
    login,
    stack_env,
)

CREATE_ARGS = ["-t2", "-c32"]
CREATE_SECONDS = 20
QUERY_SECONDS = 6
SEED_ROWS = int(os.environ.get("BENCH_CUSTOMER_ROWS", "1000000"))
SEED_WORKERS = 2
FULL_SIZE_ROWS = 1_000_000  # below this (BENCH_CUSTOMER_ROWS), a quick run: some filters may match nothing
CHUNK = 25_000
TARGET_CREATE_RPS = 1000.0
TARGET_LIST_P99_MS = 50.0
START_TIMEOUT = 60.0

BRANCHES = ["BJ001"] + [f"B{n:03d}" for n in range(2, 21)]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建国文辉力永健世广志义兴良海山仁波宁贵福生龙元全"
TIERS = ["none"] * 70 + ["gold"] * 20 + ["platinum"] * 8 + ["diamond"] * 2
RISKS = ["", "conservative", "balanced", "balanced", "aggressive"]

# The create script: unique valid bodies per thread (area code by thread, birth day and sequence by count).
CREATE_LUA = """
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local weights = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
local checks = "10X98765432"
local areas = {"110105", "110108", "110101", "110102"}
local n = 0
local base = __BASE__

local function resident_id(area, birth, seq)
  local body = area .. birth .. string.format("%03d", seq)
  local sum = 0
  for i = 1, 17 do
    sum = sum + tonumber(body:sub(i, i)) * weights[i]
  end
  local r = sum % 11
  return body .. checks:sub(r + 1, r + 1)
end

function request()
  n = n + 1
  local k = base + n
  local day = math.floor(k / 1000)
  local t = 86400 * (366 + day)  -- births from 1971-01-02 on
  local birth = os.date("!%Y%m%d", t)
  local iso = os.date("!%Y-%m-%d", t)
  local id = resident_id(areas[tid + 1], birth, k % 1000)
  local mobile = string.format("13%d%08d", tid, k)
  local body = '{"kind":"individual","name":"李明","id_type":"resident_id","id_number":"' .. id ..
    '","mobile":"' .. mobile .. '","gender":"male","birth_date":"' .. iso .. '"}'
  -- nil headers: wrk.headers, which hold -H Authorization (a table given here would replace them)
  wrk.headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/v1/customers", nil, body)
end
"""


def _check_char(body: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(c) * w for c, w in zip(body, weights, strict=True)) % 11]


def _owner_of(i: int) -> tuple[str, str, str, str]:
    """(owner, team, branch, region) of seeded customer ``i``: 20 branches × 4 teams × 10 RMs, 5 % unowned."""
    branch_no = i % len(BRANCHES)
    branch = BRANCHES[branch_no]
    region = "north" if branch_no < 10 else "east"
    local = (i // len(BRANCHES)) % 100
    if local < 5:
        return "", "", branch, region
    team_no = local % 4
    rm_no = (local // 4) % 10
    if branch == "BJ001":
        team = ("T1", "T2", "BJ001-T3", "BJ001-T4")[team_no]
        named = {("T1", 0): "u-rm1", ("T1", 1): "u-rm2", ("T2", 0): "u-rm3"}
        owner = named.get((team, rm_no), f"u-bench-{branch}-{team}-{rm_no}")
    else:
        team = f"{branch}-T{team_no + 1}"
        owner = f"u-bench-{team}-{rm_no}"
    return owner, team, branch, region


def _seed_chunk(args: tuple[str, str, str, int, int]) -> int:
    """Generate rows ``start .. start+count`` (encrypted as the service would) and COPY them in."""
    dsn, key_spec, kid, start, count = args

    from crm_platform.ids import new_id
    from crm_platform.pii import Keyring

    keyring = Keyring.from_spec(key_spec, kid)
    rng = random.Random(start)
    now = dt.datetime.now(dt.UTC)
    born_from = dt.date(1950, 1, 1)
    customers: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    tags: list[tuple[Any, ...]] = []
    for i in range(start, start + count):
        cid = new_id()
        birth = born_from + dt.timedelta(days=i % 20000)
        body = f"310101{birth:%Y%m%d}{(i // 20000) % 1000:03d}"
        id_number = body + _check_char(body)
        mobile = f"15{i:09d}"
        data_key, wrapped = keyring.new_data_key(cid)
        owner, team, branch, region = _owner_of(i)
        created = now - dt.timedelta(seconds=rng.randrange(3 * 365 * 86400))
        contacted = None if rng.random() < 0.3 else now - dt.timedelta(seconds=rng.randrange(180 * 86400))
        risk = rng.choice(RISKS)
        assessed = (now - dt.timedelta(days=rng.randrange(300))).date() if risk else None
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))
        customers.append(
            (
                cid,
                f"B{i:09d}",
                "individual",
                name,
                owner,
                team,
                branch,
                region,
                1,
                owner or "u-head",
                created,
                created,
                rng.choice(("male", "female")),
                birth,
                "resident_id",
                keyring.encrypt(data_key, cid, "id_number", id_number),
                keyring.lookup_hash("id_number", id_number),
                keyring.encrypt(data_key, cid, "mobile", mobile),
                keyring.lookup_hash("mobile", mobile),
                risk,
                assessed,
                assessed + dt.timedelta(days=365) if assessed else None,
                rng.choice(TIERS),
                "branch_counter",
                contacted,
            )
        )
        keys.append((cid, wrapped.kid, wrapped.wrapped, created))
        if i % 20 == 0:
            tags.append((cid, "高净值", owner or "u-head", created, False))

    async def copy() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.copy_records_to_table("customers", records=customers, columns=_CUSTOMER_COLUMNS)
            await conn.copy_records_to_table("customer_keys", records=keys)
            await conn.copy_records_to_table(
                "customer_tags", records=tags, columns=["customer_id", "tag", "created_by", "created_at", "managed"]
            )
        finally:
            await conn.close()

    asyncio.run(copy())
    return count


_CUSTOMER_COLUMNS = [
    "id",
    "customer_no",
    "kind",
    "name",
    "owner_id",
    "team_id",
    "branch_id",
    "region",
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "gender",
    "birth_date",
    "id_type",
    "id_number_enc",
    "id_number_hash",
    "mobile_enc",
    "mobile_hash",
    "risk_appetite",
    "risk_assessed_on",
    "risk_expires_on",
    "tier",
    "source_channel",
    "last_contact_at",
]


async def _seed(dsn: str, key_spec: str, kid: str) -> dict[str, float]:
    """Drop the secondary indexes, COPY ``SEED_ROWS`` customers in parallel, re-create the indexes, ANALYZE."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        indexes = await conn.fetch(
            """SELECT i.indexname, i.indexdef FROM pg_indexes i
               WHERE i.tablename IN ('customers', 'customer_keys', 'customer_tags')
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"""
        )
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        started = time.perf_counter()
        chunks = [(dsn, key_spec, kid, start, min(CHUNK, SEED_ROWS - start)) for start in range(0, SEED_ROWS, CHUNK)]
        loop = asyncio.get_running_loop()
        with multiprocessing.get_context("spawn").Pool(SEED_WORKERS) as pool:
            loaded = sum(await loop.run_in_executor(None, lambda: pool.map(_seed_chunk, chunks)))
        copy_s = time.perf_counter() - started
        started = time.perf_counter()
        for row in indexes:
            await conn.execute(row["indexdef"])
        index_s = time.perf_counter() - started
        await conn.execute("ANALYZE customers; ANALYZE customer_keys; ANALYZE customer_tags")
        total = await conn.fetchval("SELECT count(*) FROM customers")
    finally:
        await conn.close()
    return {"rows": float(loaded), "total": float(total), "copy_s": copy_s, "index_s": index_s}


# (label, user, query parameters, expected items: an exact count, or None / -1 for "some")
def _queries(name: str, prefix: str) -> list[tuple[str, str, dict[str, str], int | None]]:
    cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
    this_year = f"{dt.date.today().year}-01-01T00:00:00Z"
    aged_tagged = {"age_min": "30", "age_max": "40", "tag": "高净值"}
    return [
        ("RM: own customers, newest first", "rm1", {}, None),
        ("RM: own customers, by name", "rm1", {"sort": "name"}, None),
        ("Team lead: team, gold tier, balanced risk", "lead1", {"tier": "gold", "risk_appetite": "balanced"}, None),
        ("Branch head: branch, diamond tier", "head", {"tier": "diamond"}, None),
        ("Branch head: branch, no contact in 90 days", "head", {"last_contact_before": cutoff}, None),
        ("Branch head: branch, aged 30–40, tagged 高净值", "head", aged_tagged, None),
        ("Branch head: branch, by name", "head", {"sort": "name"}, None),
        (
            "Executive: region, platinum, created this year",
            "exec",
            {"tier": "platinum", "created_from": this_year},
            None,
        ),
        ("Branch head: exact name search", "head", {"name": name}, -1),
        ("Branch head: name prefix search", "head", {"name_prefix": prefix}, None),
        ("Branch head: exact ID number search", "head", {"id_number": "__ID__"}, 1),
        ("Branch head: exact mobile search", "head", {"mobile": "__MOBILE__"}, 1),
    ]


def _measure(database: str, gateway_database: str) -> dict[str, Any]:
    from crm_platform.pii import generate_master_keys
    from crm_testing.nats_server import free_port

    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    key_spec = generate_master_keys("bench")
    base = f"http://127.0.0.1:{http_port}"
    dsn = pg_dsn(database)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crm-bench-cust-") as tmp:
        root = Path(tmp)
        # The gateway on PostgreSQL too, as deployed: its audit trail takes a record per create.
        customer_env, gateway_env = stack_env(
            root,
            database,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            http_port=http_port,
            gateway_database=gateway_database,
        )
        customer_env.update(CRM_PII_MASTER_KEYS=key_spec, CRM_PII_ACTIVE_KEY_ID="bench")
        gateway_env["CRM_GATEWAY_LOGIN_RATE_PER_MINUTE"] = "1000"
        warm_script, create_script = root / "warm.lua", root / "create.lua"
        warm_script.write_text(CREATE_LUA.replace("__BASE__", "5000000") + LUA)  # other birth days than the run
        create_script.write_text(CREATE_LUA.replace("__BASE__", "0") + LUA)
        read_script = root / "read.lua"
        read_script.write_text(LUA)
        with (
            _started("crm_customer", customer_env, root / "customer.log") as customer,
            _started("crm_gateway", gateway_env, root / "gateway.log") as gateway,
        ):
            processes = [customer, gateway]
            try:
                _until("gateway ready", lambda: _request("GET", f"{base}/readyz")[0] == 200, processes)
                tokens = {user: login(base, user) for user in ("rm1", "lead1", "head", "exec")}
                _until(
                    "customer service serving",
                    lambda: _request("GET", f"{base}/api/v1/customers?limit=1", token=tokens["rm1"])[0] == 200,
                    processes,
                )

                # 1. Create throughput.
                url = f"{base}/api/v1/customers"
                _wrk(wrk, [*CREATE_ARGS, "-d3s"], tokens["rm1"], url, warm_script)
                cpu_before = {n: _cpu_seconds(p.pid) for n, p in (("gateway", gateway), ("customer", customer))}
                cpu_before["postgres"] = _processes_cpu_seconds("postgres")
                busy_before = _machine_busy()
                started = time.perf_counter()
                create = _wrk(
                    wrk, [*CREATE_ARGS, f"-d{CREATE_SECONDS}s", "--latency"], tokens["rm1"], url, create_script
                )
                wall = time.perf_counter() - started
                busy_after = _machine_busy()
                create["cpu_share"] = {
                    n: (_cpu_seconds(p.pid) - cpu_before[n]) / wall
                    for n, p in (("gateway", gateway), ("customer", customer))
                }
                create["cpu_share"]["postgres"] = (_processes_cpu_seconds("postgres") - cpu_before["postgres"]) / wall
                create["machine_busy"] = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
                figures["create"] = create
                progress(
                    f"  create {create['requests_per_s']:,.0f} req/s, p99 {create['p99_ms']:.1f} ms, errors "
                    f"{create['errors']}; CPU gateway {create['cpu_share']['gateway']:.0%}, customer "
                    f"{create['cpu_share']['customer']:.0%}, PostgreSQL {create['cpu_share']['postgres']:.0%}"
                )

                # 2. Seed.
                progress(f"  seeding {SEED_ROWS:,} customers with COPY …")
                figures["seed"] = asyncio.run(_seed(dsn, key_spec, "bench"))
                progress(
                    f"  seeded {figures['seed']['rows']:,.0f} rows in {figures['seed']['copy_s']:.0f} s, indexes "
                    f"{figures['seed']['index_s']:.0f} s; {figures['seed']['total']:,.0f} customers in all"
                )

                # 3. Lists and searches.
                sample = asyncio.run(_sample(dsn))
                figures["queries"] = []
                for label, user, params, expected in _queries(sample["name"], sample["prefix"]):
                    params = {
                        k: {"__ID__": sample["id_number"], "__MOBILE__": sample["mobile"]}.get(v, v)
                        for k, v in params.items()
                    }
                    query_url = f"{url}?{urlencode(params)}" if params else url
                    status, reply = _request("GET", query_url, token=tokens[user])
                    if status != 200:
                        raise RuntimeError(f"{label}: {status} {reply}")
                    count = len(reply["items"])
                    # An empty answer is a failure at full size; a quick run's small data set may have no match.
                    empty_allowed = SEED_ROWS < FULL_SIZE_ROWS and expected is None
                    if (count == 0 and not empty_allowed) or (
                        expected is not None and expected > 0 and count != expected
                    ):
                        raise RuntimeError(f"{label}: {count} items, expected {expected or 'some'} ({params})")
                    result = _wrk(
                        wrk, ["-t1", "-c4", f"-d{QUERY_SECONDS}s", "--latency"], tokens[user], query_url, read_script
                    )
                    result.update(label=label, user=user, params=params, items=count)
                    figures["queries"].append(result)
                    progress(
                        f"  {label}: {result['requests_per_s']:,.0f} req/s, p50 {result['p50_ms']:.1f} / p99 "
                        f"{result['p99_ms']:.1f} ms ({count} items)"
                    )
            except Exception as exc:
                logs = "\n".join(
                    f"--- {name} log (tail) ---\n" + (root / f"{name}.log").read_text(errors="replace")[-1500:]
                    for name in ("customer", "gateway")
                )
                raise RuntimeError(f"{exc}\n{logs}") from exc
    return figures


async def _sample(dsn: str) -> dict[str, str]:
    """A name of BJ001 and a seeded customer of BJ001's to search for (ID number and mobile re-derived)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        # Fixed offsets into BJ001's seeded customers, bounded by how many there are (a quick run with
        # BENCH_CUSTOMER_ROWS=2000 seeds only ~100 there).
        seeded = await conn.fetchval(
            "SELECT count(*) FROM customers WHERE branch_id = 'BJ001' AND customer_no LIKE 'B%' AND length(name) = 3"
        )
        name = await conn.fetchval(
            "SELECT name FROM customers WHERE branch_id = 'BJ001' AND length(name) = 3 "
            "AND customer_no LIKE 'B%' ORDER BY customer_no LIMIT 1 OFFSET $1",
            min(77, seeded - 1),
        )
        number = await conn.fetchval(
            "SELECT customer_no FROM customers WHERE branch_id = 'BJ001' AND customer_no LIKE 'B%' "
            "ORDER BY customer_no LIMIT 1 OFFSET $1",
            min(432, seeded - 1),
        )
    finally:
        await conn.close()
    i = int(number[1:])
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000)
    body = f"310101{birth:%Y%m%d}{(i // 20000) % 1000:03d}"
    return {"name": name, "prefix": name[:1], "id_number": body + _check_char(body), "mobile": f"15{i:09d}"}


def measure() -> dict[str, Any]:
    """Create throughput, then 1M seeded customers and the list and search latencies, through the gateway."""

    async def run() -> dict[str, Any]:
        async with scratch_database() as database, scratch_database() as gateway_database:
            return await asyncio.to_thread(_measure, database, gateway_database)

    return asyncio.run(run())


def section(figures: dict[str, Any], bare_grpc: dict[str, Any] | None = None) -> Section:
    """Rows: create throughput against its target (and against the bare grpc.aio echo of the run: the machines
    this runs on differ by twice in speed); p99 of each list and search against 50 ms."""
    create = figures["create"]
    grpc_rate = float((bare_grpc or {}).get("calls_per_s", math.nan))
    failed = sum(create["errors"].values()) if create["errors"] else 0
    rows = [
        Row(
            "Create customer `POST /api/v1/customers` (gateway → customer, PostgreSQL)",
            f"throughput, wrk {' '.join(CREATE_ARGS)} -d{CREATE_SECONDS}s",
            create["requests_per_s"],
            "req/s",
            target=f"≥ {TARGET_CREATE_RPS:,.0f} req/s",
            met=create["requests_per_s"] >= TARGET_CREATE_RPS and not failed,
            note=f"{failed:,} errors (wrk: {create['errors']})" if failed else "",
        ),
        Row(
            "… create",
            "… vs. bare grpc.aio echo",
            create["requests_per_s"],
            "req/s",
            bare_label="bare grpc.aio unary echo",
            bare_value=grpc_rate,
            ratio=create["requests_per_s"] / grpc_rate,
        ),
        Row("… create", "p99", create["p99_ms"], "ms"),
    ]
    seed = figures["seed"]
    for q in figures["queries"]:
        rows.append(
            Row(
                f"List/search over {seed['total']:,.0f}: {q['label']}",
                "p99, wrk -t1 -c4",
                q["p99_ms"],
                "ms",
                target=f"≤ {TARGET_LIST_P99_MS:.0f} ms",
                met=q["p99_ms"] <= TARGET_LIST_P99_MS and not sum(q["errors"].values()),
                note=f"p50 {q['p50_ms']:.1f} ms, {q['requests_per_s']:,.0f} req/s, {q['items']} items",
            )
        )
    cpu = create["cpu_share"]
    detail = [
        f"Create: {create['requests']:,} customers in {CREATE_SECONDS} s by `wrk {' '.join(CREATE_ARGS)}` as rm1, "
        f"each body unique and valid (resident ID with check character and matching birth date, unique mobile); "
        f"p50 {create['p50_ms']:.1f} / p99 {create['p99_ms']:.1f} ms; CPU (share of one core) gateway "
        f"{cpu['gateway']:.0%}, customer service {cpu['customer']:.0%}, PostgreSQL (all its processes) "
        f"{cpu.get('postgres', math.nan):.0%}; the machine was {create.get('machine_busy', math.nan):.0%} busy. "
        f"CPU per create: gateway {_ms_per(cpu['gateway'], create)}, customer service "
        f"{_ms_per(cpu['customer'], create)}, PostgreSQL {_ms_per(cpu.get('postgres', math.nan), create)}. "
        f"Everything shares the machine's {os.cpu_count()} cores with wrk and NATS. The customer table starts "
        "empty and is never analysed during the run (this machine's PostgreSQL runs with autovacuum off), as "
        "after a fresh install or a restore.",
        f"Seed: {seed['rows']:,.0f} customers by COPY in {seed['copy_s']:.0f} s ({SEED_WORKERS} processes, each row "
        f"with its own wrapped data key, AES-GCM ID number and mobile and keyed hashes), secondary indexes "
        f"re-created in {seed['index_s']:.0f} s; {seed['total']:,.0f} customers in all.",
        "Queries (each answer checked once for 200 and the expected item count before the run): "
        + "; ".join(f"{q['label']} as {q['user']} `{urlencode(q['params'])}`" for q in figures["queries"])
        + ".",
    ]
    return Section("Customers at scale: create, lists and searches", rows, detail)


def _ms_per(share: float, run: dict[str, Any]) -> str:
    """A process's CPU share of one core as milliseconds of CPU per request of ``run``."""
    return f"{share / run['requests_per_s'] * 1000:.2f} ms"
