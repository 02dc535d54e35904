#!/usr/bin/env python3
"""Memory cost of idle keep-alive connections on a running tradsys.

Starts nothing. Given the port and pid of a running server, it reads the
server's resident memory, opens N keep-alive connections to 127.0.0.1:PORT,
sends one `GET /api/v3/ping` on each and reads the whole response (so the
server has done real work on every connection and is now waiting for the
next request), waits until the server's RSS stops moving, reads it again and
reports the difference per connection. That is the user-space price of an
idle client, the figure that decides how many connected trading bots a shard
can hold. Kernel socket memory (/proc/net/sockstat) is reported beside it;
on loopback both ends of every connection live in this kernel, so that
figure covers client and server sockets together.

Standard library only, so it runs on any host with Python 3.11.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

REQUEST = b"GET /api/v3/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle_conns\r\n\r\n"
# The client needs one descriptor per connection plus a few for itself; the
# open-file limit on the benchmark hosts is 20,000, so stay well under it.
CONNS_MAX = 18_000
PAGE_BYTES = 4096


def read_status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile from /proc/PID/status, in KiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def read_sockstat() -> dict[str, int]:
    """The TCP line of /proc/net/sockstat: inuse, orphan, tw, alloc, mem (pages)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()[1:]
                return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}
    return {}


def read_slab_bytes() -> int | None:
    """Bytes held by all slab caches (active objects x object size), or None
    when /proc/slabinfo is not readable (it needs root). Socket structures,
    inodes and dentries of both ends of each connection show up here."""
    try:
        with open("/proc/slabinfo") as f:
            lines = f.readlines()[2:]
    except OSError:
        return None
    return sum(int(cols[1]) * int(cols[3]) for cols in (line.split() for line in lines))


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; return the status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def open_one(port: int, source: str, timeout_s: float):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout_s
    )
    writer.write(REQUEST)
    await writer.drain()
    status = await asyncio.wait_for(read_response(reader), timeout_s)
    return reader, writer, status


async def open_all(args) -> tuple[list, dict[str, int]]:
    """Open the connections, at most `--parallel` handshakes at a time so a
    modest listen backlog does not drop SYNs and skew the timing."""
    gate = asyncio.Semaphore(args.parallel)
    sources = [f"127.0.0.{i}" for i in range(1, args.sources + 1)]
    outcome = {"ok": 0, "non_200": 0, "failed": 0}
    first_error: list[str] = []

    async def guarded(i: int):
        async with gate:
            try:
                r, w, status = await open_one(args.port, sources[i % len(sources)], args.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                outcome["failed"] += 1
                if not first_error:
                    first_error.append(repr(e))
                return None
            outcome["ok" if status == 200 else "non_200"] += 1
            return r, w

    conns = [c for c in await asyncio.gather(*(guarded(i) for i in range(args.conns))) if c]
    if first_error:
        print(f"first connection error: {first_error[0]}", file=sys.stderr)
    return conns, outcome


async def wait_stable(pid: int, settle_s: float, timeout_s: float) -> tuple[int, bool]:
    """Sample RSS every 0.5 s until it has moved by no more than 16 KiB over
    `settle_s`, or give up after `timeout_s` and say so."""
    window = max(2, int(settle_s / 0.5))
    samples: list[int] = []
    deadline = time.monotonic() + timeout_s
    while True:
        samples.append(read_status_kib(pid)["VmRSS"])
        recent = samples[-window:]
        if len(recent) == window and max(recent) - min(recent) <= 16:
            return recent[-1], True
        if time.monotonic() > deadline:
            return samples[-1], False
        await asyncio.sleep(0.5)


def still_open(conns) -> int:
    """Connections the server has not closed (no EOF waiting on them)."""
    n = 0
    for reader, writer in conns:
        if not reader.at_eof() and not writer.is_closing():
            n += 1
    return n


async def main_async(args) -> int:
    rss0 = read_status_kib(args.pid)
    sock0 = read_sockstat()
    slab0 = read_slab_bytes()
    t0 = time.monotonic()
    conns, outcome = await open_all(args)
    opened_s = time.monotonic() - t0
    n = len(conns)
    if n == 0:
        print("no connection could be opened", file=sys.stderr)
        return 1
    rss1_kib, stable = await wait_stable(args.pid, args.settle, args.stable_timeout)
    rss1 = read_status_kib(args.pid)
    sock1 = read_sockstat()
    slab1 = read_slab_bytes()
    # Give the event loop a moment to notice connections the server closed
    # while we were waiting (an idle timeout would make the figure meaningless).
    await asyncio.sleep(0.2)
    alive = still_open(conns)

    user_bytes = (rss1_kib - rss0["VmRSS"]) * 1024
    anon_bytes = (rss1.get("RssAnon", 0) - rss0.get("RssAnon", 0)) * 1024
    kernel_bytes = (sock1.get("mem", 0) - sock0.get("mem", 0)) * PAGE_BYTES
    target = 4096
    verdict = "meets" if user_bytes / n <= target else "misses"

    print(f"connections: requested {args.conns}, open {n}, responses 200 {outcome['ok']}, "
          f"other status {outcome['non_200']}, failed {outcome['failed']}, "
          f"still open after settling {alive}, opened in {opened_s:.1f} s, "
          f"sources {args.sources} (127.0.0.1-127.0.0.{args.sources})")
    print(f"server rss KiB: before {rss0['VmRSS']}, after {rss1_kib} "
          f"({'stable' if stable else 'NOT stable after %.0f s' % args.stable_timeout}); "
          f"anon before {rss0.get('RssAnon')}, after {rss1.get('RssAnon')}")
    print(f"tcp sockstat: inuse {sock0.get('inuse')} -> {sock1.get('inuse')}, "
          f"mem pages {sock0.get('mem')} -> {sock1.get('mem')}")
    print(f"bytes_per_conn_user {user_bytes / n:.0f}")
    print(f"bytes_per_conn_user_anon {anon_bytes / n:.0f}")
    print(f"bytes_per_conn_kernel_sockstat_both_ends {kernel_bytes / n:.0f}")
    if slab0 is not None and slab1 is not None:
        print(f"bytes_per_conn_kernel_slab_both_ends {(slab1 - slab0) / n:.0f}")
    print(f"target: <= {target} bytes user-space per idle connection: {verdict}")

    for _, writer in conns:
        writer.close()
    await asyncio.sleep(1.0)
    print(f"server rss KiB 1 s after closing: {read_status_kib(args.pid)['VmRSS']}")
    return 0 if alive == n and outcome["failed"] == 0 else 3


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if needed > soft:
        sys.exit(f"need {needed} file descriptors, the limit is {soft}: lower --conns")


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True, help="tradsys port on 127.0.0.1")
    p.add_argument("--pid", type=int, required=True, help="tradsys process id (RSS is read from /proc)")
    p.add_argument("--conns", type=int, default=10_000, help=f"connections to open (max {CONNS_MAX})")
    p.add_argument("--sources", type=int, default=1,
                   help="spread connections over 127.0.0.1..127.0.0.K, for servers with a per-IP limit")
    p.add_argument("--parallel", type=int, default=256, help="handshakes in flight at once")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per connect and response")
    p.add_argument("--settle", type=float, default=2.0, help="seconds RSS must stay flat")
    p.add_argument("--stable-timeout", type=float, default=30.0, help="give up waiting for flat RSS after this")
    args = p.parse_args(argv)
    if not 1 <= args.conns <= CONNS_MAX:
        p.error(f"--conns must be 1..{CONNS_MAX}")
    if not 1 <= args.sources <= 254:
        p.error("--sources must be 1..254")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_nofile(args.conns + 64)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
