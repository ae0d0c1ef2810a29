"""A process's scheduling policy and event loop (crm_platform.tuning), and their settings."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest
import uvloop

from crm_platform.config import CommonSettings, SettingsError, load
from crm_platform.tuning import apply_cpu_policy, run

linux_only = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is a Linux scheduling policy")

# Run in a process of its own: the policy stays with the threads (and children) of the process that sets it.
_PROBE = textwrap.dedent(
    """
    import json, os, subprocess, sys, threading
    from crm_platform.tuning import apply_cpu_policy

    def policy(tid=0):
        return {os.SCHED_BATCH: "batch", os.SCHED_OTHER: "normal"}.get(os.sched_getscheduler(tid), "other")

    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # whatever the test runner runs under
    started = threading.Event()
    release = threading.Event()
    earlier = {}

    def before():
        earlier["tid"] = threading.get_native_id()
        started.set()
        release.wait()

    thread = threading.Thread(target=before)
    thread.start()
    started.wait()
    seen = {"before": [policy(), policy(earlier["tid"])]}
    seen["applied"] = apply_cpu_policy(sys.argv[1])
    seen["after"] = [policy(), policy(earlier["tid"])]
    later = {}
    spawned = threading.Thread(target=lambda: later.setdefault("policy", policy()))
    spawned.start()
    spawned.join()
    seen["new_thread"] = later["policy"]
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.sched_getscheduler(0) == os.SCHED_BATCH)"],
        capture_output=True, text=True, check=True,
    )
    seen["child_batch"] = child.stdout.strip() == "True"
    release.set()
    thread.join()
    print(json.dumps(seen))
    """
)


def _probe(policy: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _PROBE, policy], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


@linux_only
def test_batch_policy_covers_every_thread_and_what_starts_later() -> None:
    seen = _probe("batch")
    assert seen["before"] == ["normal", "normal"]
    assert seen["applied"] == "batch"
    assert seen["after"] == ["batch", "batch"]  # the calling thread and one that was already running
    assert seen["new_thread"] == "batch"  # threads started later (gRPC's, the pools') inherit it
    assert seen["child_batch"] is True  # and so do child processes (the import helper, uvicorn's workers)


@linux_only
def test_normal_policy_leaves_the_kernel_default() -> None:
    seen = _probe("normal")
    assert seen["applied"] == "normal"
    assert seen["after"] == ["normal", "normal"]
    assert seen["new_thread"] == "normal"
    assert seen["child_batch"] is False


def test_unknown_policy_and_loop_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown CPU policy 'fifo'"):
        apply_cpu_policy("fifo")

    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(ValueError, match="unknown event loop 'trio'"):
        run(coro, "trio")
    coro.close()


@pytest.mark.parametrize(("kind", "expected"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)])
def test_run_uses_the_loop_asked_for(kind: str, expected: type) -> None:
    async def loop_type() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    found = run(loop_type(), kind)
    assert issubclass(found, expected)
    assert (found is uvloop.Loop or issubclass(found, uvloop.Loop)) == (kind == "uvloop")


def test_settings_default_to_batch_and_uvloop_and_name_a_bad_value() -> None:
    settings = load(CommonSettings, {})
    assert (settings.cpu_policy, settings.event_loop) == ("batch", "uvloop")
    assert load(CommonSettings, {"CRM_CPU_POLICY": "normal", "CRM_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="CRM_CPU_POLICY='realtime' is not valid: expected batch or normal"):
        load(CommonSettings, {"CRM_CPU_POLICY": "realtime"})
    with pytest.raises(SettingsError, match="CRM_EVENT_LOOP='gevent' is not valid: expected uvloop or asyncio"):
        load(CommonSettings, {"CRM_EVENT_LOOP": "gevent"})
