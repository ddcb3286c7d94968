"""Delivers the simulated platform's pushes to the desk's webhook, encrypted, as the platform does.

A push that is not answered ``success`` (or empty) with HTTP 200 is retried, about 10 times; the real
platform spreads them over ~3.6 h, the simulator over ``retry_delays`` (seconds, scaled for tests).
Faults: ``duplicate_push_rate`` delivers a push twice, ``reorder_push_rate`` holds one back until the
next push of the shop has gone.
"""

from __future__ import annotations

import heapq
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import requests

from app.platform.crypto import PushCrypto, sha1_signature
from app.platform.simulator.state import SimShop

log = logging.getLogger(__name__)
DEFAULT_RETRY_DELAYS = (5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200)


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    shop: SimShop = field(compare=False)
    payload: dict = field(compare=False)
    attempt: int = field(default=0, compare=False)


class PushSender:
    def __init__(self, workers: int = 4, retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS, timeout: float = 5.0):
        self.retry_delays = retry_delays
        self.timeout = timeout
        self._heap: list[_Delivery] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._held: dict[str, _Delivery] = {}  # appid -> a push held back (reorder fault)
        self._stopping = False
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0
        # (sent at, appid, payload) of the latest accepted deliveries; bounded for a demo that runs for days.
        self.log: deque[tuple[float, str, dict]] = deque(maxlen=10_000)
        self._in_flight = 0
        # While this says so (the platform is down), nothing is delivered; resume() wakes the senders.
        self.is_down: Callable[[], bool] = lambda: False
        self._threads = [threading.Thread(target=self._run, name=f"sim-push-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def enqueue(self, shop: SimShop, payload: dict) -> None:
        if not shop.push_url:
            return  # pushes off for this shop: the desk must poll
        rng, faults = shop.rng, shop.faults
        with self._cv:
            delivery = self._new(shop, payload, time.monotonic())
            held = self._held.pop(shop.appid, None)
            if faults.reorder_push_rate and rng.random() < faults.reorder_push_rate and held is None:
                self._held[shop.appid] = delivery  # goes out right after the next one
            else:
                heapq.heappush(self._heap, delivery)
                if held is not None:
                    held.due = delivery.due + 0.001
                    heapq.heappush(self._heap, held)
            if faults.duplicate_push_rate and rng.random() < faults.duplicate_push_rate:
                heapq.heappush(self._heap, self._new(shop, payload, time.monotonic() + 0.05))
            self._cv.notify()

    def flush_held(self) -> None:
        with self._cv:
            for delivery in self._held.values():
                heapq.heappush(self._heap, delivery)
            self._held.clear()
            self._cv.notify_all()

    def resume(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def pending(self) -> int:
        with self._cv:
            return len(self._heap) + len(self._held)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0 and not self._busy():
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _new(self, shop: SimShop, payload: dict, due: float) -> _Delivery:
        self._seq += 1
        return _Delivery(due=due, seq=self._seq, shop=shop, payload=payload)

    def _busy(self) -> bool:
        with self._cv:
            return self._in_flight > 0

    def _run(self) -> None:
        session = requests.Session()
        session.trust_env = False  # pushes go straight to the desk's URL: no proxy, no .netrc, no scan per push
        while True:
            with self._cv:
                while not self._stopping and (not self._heap or self._heap[0].due > time.monotonic() or self.is_down()):
                    if self.is_down():
                        self._cv.wait(timeout=0.5)
                        continue
                    self._cv.wait(timeout=(self._heap[0].due - time.monotonic()) if self._heap else None)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                ok = self._deliver(session, delivery)
            finally:
                with self._cv:
                    self._in_flight -= 1
            if not ok:
                self._retry(delivery)

    def _deliver(self, session: requests.Session, delivery: _Delivery) -> bool:
        shop = delivery.shop
        crypto = PushCrypto(shop.push_token, shop.aes_key, shop.appid)
        timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
        text = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":"))
        encrypted, msg_signature = crypto.encrypt_push(text, timestamp, nonce)
        query = urlencode(
            {
                "signature": sha1_signature(shop.push_token, timestamp, nonce),
                "timestamp": timestamp,
                "nonce": nonce,
                "encrypt_type": "aes",
                "msg_signature": msg_signature,
            }
        )
        url = f"{shop.push_url}{'&' if '?' in shop.push_url else '?'}{query}"
        try:
            response = session.post(url, json={"ToUserName": shop.appid, "Encrypt": encrypted}, timeout=self.timeout)
        except requests.RequestException as exc:
            log.info("push to %s failed: %s", shop.push_url, exc)
            return False
        if response.status_code == 200 and response.text.strip() in ("", "success"):
            with self._cv:
                self.delivered += 1
                self.log.append((time.time(), shop.appid, delivery.payload))
            return True
        log.info("push to %s not acknowledged: %s %s", shop.push_url, response.status_code, response.text[:100])
        return False

    def _retry(self, delivery: _Delivery) -> None:
        with self._cv:
            self.failed_attempts += 1
            if delivery.attempt >= len(self.retry_delays):
                self.dropped += 1
                log.warning("push dropped after %d attempts: %s", delivery.attempt + 1, delivery.payload.get("Event"))
                return
            delivery.due = time.monotonic() + self.retry_delays[delivery.attempt]
            delivery.attempt += 1
            heapq.heappush(self._heap, delivery)
            self._cv.notify()
