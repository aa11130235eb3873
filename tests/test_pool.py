"""The media worker pool with real worker processes (no calls: capacity bookkeeping,
warm spares, replacement of a dead worker, and the control channel)."""

from __future__ import annotations

import asyncio
import os
import signal

from softswitch.media.pool import PAIRS_PER_WORKER, Pool, Worker


def make_pool(tmp_path, deaths: list[Worker], **kw) -> Pool:
    return Pool(
        edge_port=9,
        public_address="127.0.0.1",
        rtp_min=31000,
        rtp_max=31999,
        min_workers=kw.pop("min_workers", 1),
        max_workers=kw.pop("max_workers", 2),
        log_dir=tmp_path,
        on_event=lambda w, m: None,
        on_death=deaths.append,
        **kw,
    )


async def wait_for(pred, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def test_reserves_pairs_until_capacity_then_refuses(tmp_path):
    deaths: list[Worker] = []
    pool = make_pool(tmp_path, deaths)
    await pool.start()
    try:
        first = pool.reserve()
        second = pool.reserve()
        assert first is second  # the only warm worker (the spare is still starting)
        assert first.free_pairs == 0
        # the pool started a spare worker as soon as free pairs ran low
        await wait_for(lambda: sum(w.free_pairs for w in pool.workers.values()) == 2)
        third, fourth = pool.reserve(), pool.reserve()
        assert third is fourth is not first
        assert pool.in_use() == pool.capacity == 2 * PAIRS_PER_WORKER
        assert pool.reserve() is None
        assert pool.reserve_later() is None  # nothing starting: refuse at once (503)
        pool.release(first)
        assert pool.reserve() is None  # not at once: pjsua frees the slots a bit later
        await wait_for(lambda: first.free_pairs == 1)
        assert pool.reserve() is first
        # each worker got its own RTP range
        ranges = sorted((w.rtp_port, w.rtp_port + w.rtp_count) for w in pool.workers.values())
        assert ranges[0][1] <= ranges[1][0]
    finally:
        await pool.stop()
    codes = [w.process.returncode for w in (first, third)]
    assert codes == [0, 0], codes  # clean shutdown


async def test_a_call_waits_for_a_starting_worker(tmp_path):
    pool = make_pool(tmp_path, [], min_workers=1, max_workers=2, spare_pairs=0)
    await pool.start()
    try:
        pool.reserve()
        pool.reserve()
        later = pool.reserve_later()  # no pair free, but a worker is now starting
        assert later is not None
        worker = await asyncio.wait_for(later, 20)
        assert worker is not None and worker.pairs == 1
    finally:
        await pool.stop()


async def test_dead_worker_is_reported_and_replaced(tmp_path):
    deaths: list[Worker] = []
    pool = make_pool(tmp_path, deaths, min_workers=1, max_workers=2)
    await pool.start()
    try:
        victim = pool.reserve()
        victim.legs.add("c1-a")
        os.kill(victim.pid, signal.SIGKILL)
        await wait_for(lambda: deaths)
        assert deaths == [victim] and victim.legs == {"c1-a"}
        await wait_for(lambda: any(w.free_pairs for w in pool.workers.values()))
        assert victim not in pool.workers.values()
        replacement = pool.reserve()
        assert replacement is not None and replacement.pid != victim.pid
        reply = await pool.request(replacement, {"cmd": "stats", "leg": "nope"})
        assert reply["ok"] is False  # the control channel answers (no such leg)
    finally:
        await pool.stop()


async def test_failed_originate_becomes_a_disconnected_event(tmp_path):
    events: list[dict] = []
    pool = Pool(
        edge_port=9,
        public_address="127.0.0.1",
        rtp_min=32000,
        rtp_max=32999,
        min_workers=1,
        max_workers=1,
        log_dir=tmp_path,
        on_event=lambda w, m: events.append(m),
        on_death=lambda w: None,
    )
    await pool.start()
    try:
        w = pool.reserve()
        pool.send(w, {"cmd": "originate", "leg": "c9-b", "uri": "this is not a SIP URI"})
        await wait_for(lambda: events)
        assert events[0]["leg"] == "c9-b" and events[0]["state"] == "disconnected"
        assert events[0]["code"] == 503
    finally:
        await pool.stop()
