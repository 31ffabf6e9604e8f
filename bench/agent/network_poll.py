#!/usr/bin/env python3
"""CPU of one network poll: the /proc/net reader against sock_diag, in the same run.

Opens ``--connections`` TCP connections on loopback (a busy server's table; the host's
own sockets come on top), then times, per poll, in CPU microseconds of this process:

* ``/proc/net``: reading and parsing the four tables (the reader before sock_diag, kept
  as the fallback);
* ``sock_diag, cold``: the netlink dumps, every socket decoded;
* ``sock_diag, warm``: the same table again (sockets known from the last dump are not
  decoded again: what an idle poll costs);
* ``sensor poll``: the network sensor's whole ``poll_once`` on a warm, unchanged table.

    .venv/bin/python bench/agent/network_poll.py --connections 2000
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.platform.linux.procfs import read_sockets  # noqa: E402
from agent.platform.linux.sock_diag import SockDiag  # noqa: E402
from agent.sensors.base import SensorContext, SensorHealth  # noqa: E402
from agent.sensors.network import NetworkConfig, NetworkSensor  # noqa: E402


def cpu_us(fn: Callable[[], object], rounds: int) -> float:
    """Median CPU microseconds of one call, over ``rounds`` groups of 5 calls."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(5):
            fn()
        samples.append((time.process_time() - start) / 5 * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * args.connections
                                                               + 100)), hard))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    held: list[socket.socket] = []
    for _ in range(args.connections):
        held.append(socket.create_connection(server.getsockname()))
        held.append(server.accept()[0])
    diag = SockDiag(max_sockets=100_000)
    table = len(diag.dump().sockets)
    print(f"socket table: {table} sockets ({2 * args.connections} opened by this bench)")
    proc = cpu_us(lambda: read_sockets(max_sockets=100_000), args.rounds)
    cold = cpu_us(lambda: SockDiag(max_sockets=100_000).dump(), args.rounds)
    warm = cpu_us(diag.dump, args.rounds)
    ctx = SensorContext(emit=lambda d: None, health=SensorHealth("network"),
                        state_dir=Path(tempfile.mkdtemp()), report_error=lambda m, f: None)
    sensor = NetworkSensor(NetworkConfig(max_sockets=100_000), ctx)
    sensor.poll_once()
    sensor.poll_once()
    poll = cpu_us(sensor.poll_once, args.rounds)
    print(f"/proc/net read+parse   {proc:9.0f} us CPU per poll")
    print(f"sock_diag, cold        {cold:9.0f} us ({proc / cold:.1f}x less)")
    print(f"sock_diag, warm        {warm:9.0f} us ({proc / warm:.1f}x less)")
    print(f"sensor poll, unchanged {poll:9.0f} us; every 2 s that is "
          f"{poll / 2e6 * 100:.3f} % of one core (/proc/net alone: {proc / 2e6 * 100:.3f} %)")
    for s in held:
        s.close()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
