"""The coordinator's pool of media workers (no pjsua2 here: this side only spawns
processes and speaks the JSON-lines protocol of docs/worker-protocol.md).

Why a pool: the pjsua2 wheel allows 4 calls per process, so each worker holds at most
two call pairs (a caller leg and the leg it is bridged to). A pair is reserved before a
call is handed to a worker, so a caller is never answered on a worker that cannot place
the second leg. Workers are kept warm (starting one takes a fraction of a second); a dead
worker is reported (its calls are failed by the coordinator) and replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PAIRS_PER_WORKER = 2  # 4 pjsua2 calls per process = 2 caller/callee pairs
START_TIMEOUT = 30.0  # seconds for a new worker to say hello (slow on a loaded box)
RELEASE_GRACE = 0.25  # seconds before an ended call's pair is handed out again


@dataclass(eq=False)
class Worker:
    slot: int  # index in the pool: picks the RTP port sub-range
    sip_port: int
    rtp_port: int
    rtp_count: int
    process: subprocess.Popen | None = None
    writer: asyncio.StreamWriter | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    alive: bool = True
    pairs: int = 0  # reserved pairs
    legs: set[str] = field(default_factory=set)
    pending: dict[int, asyncio.Future] = field(default_factory=dict)
    reader_task: asyncio.Task | None = None

    @property
    def free_pairs(self) -> int:
        return PAIRS_PER_WORKER - self.pairs if self.alive and self.ready.is_set() else 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


OnEvent = Callable[[Worker, dict], None]
OnDeath = Callable[[Worker], None]


async def _reap(process: subprocess.Popen) -> int:
    """Wait for a worker process to exit without blocking the event loop."""
    return await asyncio.to_thread(process.wait)


class Pool:
    def __init__(
        self,
        *,
        edge_port: int,
        public_address: str,
        rtp_min: int,
        rtp_max: int,
        min_workers: int,
        max_workers: int,
        log_dir: Path,
        on_event: OnEvent,
        on_death: OnDeath,
        spare_pairs: int = 2,
        media_timeout: float = 0.0,
        hold_music: str = "",
    ) -> None:
        self.edge_port = edge_port
        self.public_address = public_address
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.log_dir = log_dir
        self.on_event = on_event
        self.on_death = on_death
        self.spare_pairs = spare_pairs
        self.media_timeout = media_timeout
        self.hold_music = hold_music  # WAV heard while the other party holds ("" = none)
        span = (rtp_max - rtp_min + 1) // max_workers
        self.rtp_span = span - span % 2
        self.rtp_min = rtp_min
        self.workers: dict[int, Worker] = {}  # slot -> worker
        self._ids = itertools.count(1)
        self._closing = False
        self._spawning = 0
        self._tasks: set[asyncio.Task] = set()
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._releasing = 0  # pairs in their release grace period

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        workers = [self._spawn() for _ in range(self.min_workers)]
        await asyncio.gather(*(self._wait_ready(w) for w in workers if w is not None))

    async def _wait_ready(self, w: Worker) -> None:
        try:
            await asyncio.wait_for(w.ready.wait(), START_TIMEOUT)
        except TimeoutError:
            log.error("media worker %s did not start in %ss", w.slot, START_TIMEOUT)
            self._kill(w)

    async def stop(self) -> None:
        self._closing = True
        for w in list(self.workers.values()):
            self.send(w, {"cmd": "shutdown"})
        for w in list(self.workers.values()):
            if w.process is not None:
                try:
                    await asyncio.wait_for(_reap(w.process), 5)
                except TimeoutError:
                    self._kill(w)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_reap(w.process), 2)
            if w.writer is not None:
                w.writer.close()
        for task in list(self._tasks):
            task.cancel()

    def _free_slot(self) -> int | None:
        for slot in range(self.max_workers):
            if slot not in self.workers:
                return slot
        return None

    def _spawn(self) -> Worker | None:
        slot = self._free_slot()
        if slot is None or self._closing:
            return None
        w = Worker(
            slot=slot,
            sip_port=0,  # the worker binds a free port and reports it in hello
            rtp_port=self.rtp_min + slot * self.rtp_span,
            rtp_count=self.rtp_span,
        )
        self.workers[slot] = w
        self._spawning += 1
        task = asyncio.get_running_loop().create_task(self._run(w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return w

    async def _run(self, w: Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_file = self.log_dir / f"worker-{w.slot}.log"
        args = [
            sys.executable,
            "-m",
            "softswitch.media.worker",
            "--control-fd",
            str(child.fileno()),
            "--id",
            str(w.slot),
            "--sip-port",
            str(w.sip_port),
            "--rtp-port",
            str(w.rtp_port),
            "--rtp-port-count",
            str(w.rtp_count),
            "--edge",
            f"127.0.0.1:{self.edge_port}",
            "--public-address",
            self.public_address,
            "--media-timeout",
            str(self.media_timeout),
            "--hold-music",
            self.hold_music,
            "--log-file",
            str(log_file),
        ]
        try:
            with open(self.log_dir / f"worker-{w.slot}.stderr", "ab") as err:
                # Plain Popen, reaped by our own waits: asyncio's child watcher reports
                # "unknown child" when subprocess' cleanup reaps a worker first.
                w.process = subprocess.Popen(
                    args,
                    pass_fds=[child.fileno()],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            child.close()
            reader, w.writer = await asyncio.open_unix_connection(sock=parent)
            await self._read(w, reader)
        except Exception:
            log.exception("media worker %s failed", w.slot)
        finally:
            if not w.ready.is_set():
                self._spawning -= 1
            child.close()
            await self._died(w)

    async def _read(self, w: Worker, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("worker %s: bad control line %r", w.slot, line[:200])
                continue
            event = msg.get("event")
            if event == "hello":
                w.sip_port = int(msg.get("sip_port") or w.sip_port)
                log.info(
                    "media worker %s ready (pid %s, sip 127.0.0.1:%s, rtp %s-%s)",
                    w.slot,
                    w.pid,
                    w.sip_port,
                    w.rtp_port,
                    w.rtp_port + w.rtp_count - 1,
                )
                if not w.ready.is_set():
                    self._spawning -= 1
                w.ready.set()
                self._serve_waiters()
                continue
            if event == "reply":
                fut = w.pending.pop(msg.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            try:
                self.on_event(w, msg)
            except Exception:
                log.exception("error handling worker %s event %s", w.slot, msg)

    async def _died(self, w: Worker) -> None:
        if not w.alive:
            return
        w.alive = False
        if w.process is not None and w.process.poll() is None:
            self._kill(w)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_reap(w.process), 5)
        for fut in w.pending.values():
            if not fut.done():
                fut.set_result({"ok": False, "error": "worker died"})
        if self.workers.get(w.slot) is w:
            del self.workers[w.slot]
        if self._closing:
            return
        code = w.process.returncode if w.process else None
        log.error(
            "media worker %s (pid %s) exited with %s; %d legs lost",
            w.slot,
            w.pid,
            code,
            len(w.legs),
        )
        try:
            self.on_death(w)
        except Exception:
            log.exception("error handling death of worker %s", w.slot)
        self._top_up()

    def _kill(self, w: Worker) -> None:
        if w.process is not None and w.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                w.process.kill()

    # -- capacity ----------------------------------------------------------------------
    def reserve(self) -> Worker | None:
        """A worker with a free pair of slots, or None when at capacity: answer 503.
        The emptiest worker first: calls spread over the warm workers, so a call's
        worker usually has a slot to spare for a transfer's third leg, and a burst of
        new calls is not queued on one process."""
        candidates = [w for w in self.workers.values() if w.free_pairs > 0]
        if not candidates:
            self._top_up()
            return None
        w = min(candidates, key=lambda x: (-x.free_pairs, x.slot))
        w.pairs += 1
        self._top_up()
        return w

    def reserve_on(self, w: Worker) -> bool:
        """A pair on this very worker (call pickup joins a call where it rings)."""
        if w.free_pairs <= 0:
            return False
        w.pairs += 1
        self._top_up()
        return True

    def reserve_later(self, timeout: float = START_TIMEOUT) -> asyncio.Future | None:
        """When no pair is free but a worker is starting (or a pair is about to be
        released), a new call waits instead of getting 503: the future resolves to a
        Worker with a pair reserved, or None after `timeout`. None at once when nothing
        can free up: the pool is at capacity."""
        self._top_up()
        if self._spawning == 0 and self._releasing == 0:
            self._spawn()  # None when every slot of the pool is taken
        if self._spawning == 0 and self._releasing == 0:
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._waiters.append(fut)
        loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        return fut

    def _serve_waiters(self) -> None:
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            candidates = [w for w in self.workers.values() if w.free_pairs > 0]
            if not candidates:
                return
            w = min(candidates, key=lambda x: (-x.free_pairs, x.slot))
            w.pairs += 1
            self._waiters.popleft().set_result(w)
        self._top_up()

    def release(self, w: Worker) -> None:
        """Free a pair once its call has ended. pjsua frees a call slot only after the
        DISCONNECTED callback has returned and its media is torn down, so the pair is
        handed out again after a short grace period, not at once."""
        self._releasing += 1
        asyncio.get_running_loop().call_later(RELEASE_GRACE, self._release_now, w)

    def _release_now(self, w: Worker) -> None:
        self._releasing -= 1
        if w.pairs > 0:
            w.pairs -= 1
        self._serve_waiters()

    def _top_up(self) -> None:
        """Keep `spare_pairs` free pairs ready (or starting), and `min_workers` alive."""
        if self._closing:
            return
        while True:
            free = sum(w.free_pairs for w in self.workers.values())
            free += self._spawning * PAIRS_PER_WORKER
            if len(self.workers) >= self.max_workers:
                return
            if free >= self.spare_pairs and len(self.workers) >= self.min_workers:
                return
            if self._spawn() is None:
                return

    @property
    def capacity(self) -> int:
        return self.max_workers * PAIRS_PER_WORKER

    def in_use(self) -> int:
        return sum(w.pairs for w in self.workers.values())

    # -- commands ----------------------------------------------------------------------
    def send(self, w: Worker, cmd: dict) -> None:
        """Send a command. An `originate` is sent as a request: when the worker cannot
        place the leg, a `disconnected` state event (503) is made up for it, so the call
        logic ends the call the one way it already knows instead of waiting forever."""
        if cmd.get("cmd") == "originate" and "id" not in cmd:
            task = asyncio.get_running_loop().create_task(self._originate(w, cmd))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if w.writer is None or not w.alive or w.writer.is_closing():
            return
        w.writer.write(json.dumps(cmd, separators=(",", ":")).encode() + b"\n")

    async def _originate(self, w: Worker, cmd: dict) -> None:
        reply = await self.request(w, cmd)
        if reply.get("ok") or not w.alive:
            return  # a dead worker's calls are failed by on_death
        log.warning(
            "worker %s could not originate %s: %s", w.slot, cmd.get("leg"), reply.get("error")
        )
        self.on_event(
            w,
            {
                "event": "state",
                "leg": cmd.get("leg"),
                "state": "disconnected",
                "code": 503,
                "reason": str(reply.get("error")),
                "cause": "local",
            },
        )

    async def request(self, w: Worker, cmd: dict, timeout: float = 5.0) -> dict:
        """Send a command and wait for its reply."""
        request_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        w.pending[request_id] = fut
        self.send(w, dict(cmd, id=request_id))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            w.pending.pop(request_id, None)
            return {"ok": False, "error": "timeout"}

    def find_worker(self, host: str, port: int) -> Worker | None:
        if host not in ("127.0.0.1", "localhost"):
            return None
        for w in self.workers.values():
            if w.sip_port == port:
                return w
        return None

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers.values() if w.pid]
