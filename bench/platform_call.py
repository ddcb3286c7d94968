"""What one platform call costs the desk's thread: CPU per `PlatformClient` call, over real HTTP.

Every order and after-sale push, every approval and every agent's reply makes platform calls (an
automatic refund makes five). This measures one call's CPU in the calling thread (`time.thread_time`:
the simulator answering on its own threads is not in it), the simulator serving on loopback, the
token in memory, in two ways interleaved round by round:

- `environment_once`: the desk's client as it is: the proxy and CA settings read from the
  environment once per base URL (`platform/client.py` `environment_settings`).
- `environment_per_call`: the same client on a `requests.Session` that reads the environment on
  every call (requests' default, `trust_env`): what the desk did before.

    python bench/platform_call.py [--calls 300] [--rounds 7]

Prints one JSON line: medians over rounds, and their ratio. The figure grows with the size of the
process's environment (`environment_variables`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.models import ApiBlock, PlatformToken
from app.platform.client import Credentials, PlatformClient, TokenStore
from app.platform.simulator import Simulator
from app.platform.simulator.scenario import CATALOGUE
from bench.common import AES_KEY, SimulatorServer, emit, rounds_summary

APPID = "wxbe9c4000000000cd"
SECRET = "bench-secret-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    simulator = Simulator.create(push_workers=1)
    server = SimulatorServer(simulator)
    base_url = server.url
    sim_shop = simulator.platform.add_shop(APPID, SECRET, "benchtoken", AES_KEY, "http://127.0.0.1:9/unused")
    order_id = simulator.platform.place_order(sim_shop, "o_bench_call", [dict(CATALOGUE[0], sku_cnt=1)])["order_id"]

    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/tokens.db")
        for table in (PlatformToken.__table__, ApiBlock.__table__):
            table.create(engine)
        tokens = TokenStore(engine)
        credentials = Credentials(1, APPID, SECRET, base_url)
        clients = {
            "environment_once": PlatformClient(credentials, tokens),
            "environment_per_call": PlatformClient(credentials, tokens, session=requests.Session()),
        }
        for client in clients.values():  # warm: the token, the connection paths
            for _ in range(20):
                client.get_order(order_id)
        cpu: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.rounds):
            for name, client in clients.items():
                started = time.thread_time()
                for _ in range(args.calls):
                    client.get_order(order_id)
                cpu[name].append(1000 * (time.thread_time() - started) / args.calls)
        engine.dispose()
    simulator.stop()
    server.shutdown()
    summaries = {name: rounds_summary(values, 3) for name, values in cpu.items()}
    emit({
        "bench": "platform_call",
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "environment_variables": len(os.environ),
        "cpu_ms_per_call": summaries,
        "ratio_median": round(summaries["environment_once"]["median"] / summaries["environment_per_call"]["median"], 3),
    })


if __name__ == "__main__":
    main()
