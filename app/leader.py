"""Scheduler leadership: one `flask scheduler` process runs the jobs; others wait and take over.

A Redis lock with a lease: ``SET key me NX PX lease`` takes it, a compare-and-extend script keeps it
(only the owner may extend it), a compare-and-delete gives it back at shutdown. The leader renews
every ``SCHEDULER_RENEW_SECONDS``; a standby tries to take the lock as often, so it leads within
``SCHEDULER_LEASE_SECONDS`` + one renewal after the leader died, and at once after a clean stop.

The leader counts its lease as its own only until ``lease - margin`` after the request that took or
extended it was *sent* (not answered): a process that stalls (a GC pause, a stopped VM, a Redis that
does not answer) stops counting itself leader before the key can expire in Redis, and its jobs are
paused at the first failed renewal. A job still running in a process that just lost the lease is
kept from running a second time elsewhere by a per-job lock (app/scheduler.py: a PostgreSQL advisory
lock, which dies with the process's connection).

Who leads, since when and how fresh the lease is, is kept beside the lock for /healthz.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

log = logging.getLogger(__name__)

_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[2], 'identity', ARGV[1], 'since', ARGV[3], 'renewed_at', ARGV[3])
  redis.call('pexpire', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  redis.call('hset', KEYS[2], 'renewed_at', ARGV[3])
  redis.call('pexpire', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1], KEYS[2])
  return 1
end
return 0
"""
RUNS_KEPT = 2000


def lock_key(config) -> str:
    """One lock per deployment: deployments sharing a Redis have their own SOCKETIO_CHANNEL."""
    return f"{config['SOCKETIO_CHANNEL']}:scheduler:leader"


def runs_key(config) -> str:
    return f"{config['SOCKETIO_CHANNEL']}:scheduler:runs"


def redis_client(url: str, lease_seconds: float):
    import redis

    # A call that hangs must fail well inside the lease, or a stalled leader would keep its jobs.
    timeout = max(0.2, lease_seconds / 4)
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


class Leadership:
    """This process's claim on the scheduler lock. ``tick()`` takes or keeps it; ``holds()`` says
    whether jobs may run right now."""

    def __init__(self, client, key: str, lease_seconds: float = 5.0, identity: str | None = None):
        self.client = client
        self.key = key
        self.info_key = f"{key}:info"
        self.lease_ms = int(lease_seconds * 1000)
        # Stop counting on the lease a fifth before it runs out in Redis (clock rates differ a little).
        self.margin = lease_seconds / 5
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self._valid_until = 0.0
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def holds(self) -> bool:
        return self.leader and time.monotonic() < self._valid_until

    def tick(self) -> bool:
        """Keep the lease if ours, else try to take it. False on any doubt (Redis unreachable)."""
        sent = time.monotonic()
        keys, args = [self.key, self.info_key], [self.identity, self.lease_ms, f"{time.time():.3f}"]
        try:
            if self.leader and self._renew(keys=keys, args=args):
                got = True
            else:
                if self.leader:
                    log.warning("scheduler lease lost to another process")
                got = bool(self._acquire(keys=keys, args=args))
        except Exception as exc:
            if self.leader:
                log.warning("scheduler lease not renewed (Redis: %s); pausing jobs", exc)
            got = False
        if got:
            self._valid_until = sent + self.lease_ms / 1000 - self.margin
        self.leader = got
        return got

    def release(self) -> None:
        if not self.leader:
            return
        self.leader = False
        try:
            self._release(keys=[self.key, self.info_key], args=[self.identity])
        except Exception as exc:
            log.warning("could not release the scheduler lease (it expires on its own): %s", exc)

    def record_run(self, runs_key_name: str, job_id: str, started: float, ended: float) -> None:
        """The last runs of every job (who ran it, when): for operators and the fault tests."""
        entry = json.dumps({"job": job_id, "by": self.identity, "start": started, "end": ended})
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(runs_key_name, entry)
            pipe.ltrim(runs_key_name, -RUNS_KEPT, -1)
            pipe.execute()
        except Exception:  # best effort: the journal is not the lock
            log.debug("could not record the run of %s", job_id, exc_info=True)


def status(client, key: str) -> dict:
    """Who leads (for /healthz): identity, since, seconds since the last renewal, lease left."""
    info, ttl_ms = client.hgetall(f"{key}:info"), client.pttl(key)
    holder = client.get(key)
    if holder is None:
        return {"leader": None}
    now = time.time()
    renewed = float(info.get(b"renewed_at", 0) or 0)
    since = float(info.get(b"since", 0) or 0)
    return {
        "leader": holder.decode(),
        "leader_for_seconds": round(now - since, 1) if since else None,
        "lease_age_seconds": round(now - renewed, 2) if renewed else None,
        "lease_left_seconds": round(ttl_ms / 1000, 2) if ttl_ms and ttl_ms > 0 else None,
    }
