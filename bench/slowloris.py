#!/usr/bin/env python3
"""Slow clients against a running service, on loopback only, bounded in count and time.

    bench/slowloris.py --port 8777 --pid <service pid> [--connections 2000] [--seconds 20]

Opens CONNECTIONS connections that each send a request header one byte a second, for SECONDS;
meanwhile a normal request (GET /healthcheck) every 100 ms. Samples the service's resident memory
(VmRSS) during the attack and for 30 s after it. Prints one JSON object: the peak and final RSS,
how the normal requests fared, and how long the server took to close each slow connection.
"""
import argparse
import asyncio
import json
import resource
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def slow_client(port, until, closed_after):
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        closed_after.append(None)  # refused: never held
        return
    header = b"GET /healthcheck HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 10_000
    try:
        for byte in header:
            if time.monotonic() > until:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                    closed_after.append(time.monotonic() - opened)
                    return
            except asyncio.TimeoutError:
                pass
        closed_after.append(float("inf"))  # still open when the attack ended
    except (ConnectionError, OSError):
        closed_after.append(time.monotonic() - opened)
    finally:
        writer.close()


async def normal_requests(port, until, latencies, failures):
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=10)
            writer.write(b"GET /healthcheck HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                latencies.append(time.monotonic() - started)
            else:
                failures.append("status")
        except (asyncio.TimeoutError, OSError) as err:
            failures.append(type(err).__name__)
        await asyncio.sleep(0.1)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--after", type=float, default=30)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    before = rss_mib(args.pid)
    until = time.monotonic() + args.seconds
    closed_after, latencies, failures, during = [], [], [], []

    async def sample():
        while time.monotonic() < until:
            during.append(rss_mib(args.pid))
            await asyncio.sleep(0.5)

    slow = [slow_client(args.port, until, closed_after) for _ in range(args.connections)]
    await asyncio.gather(sample(), normal_requests(args.port, until, latencies, failures), *slow)
    after = []
    for _ in range(int(args.after * 2)):
        await asyncio.sleep(0.5)
        after.append(rss_mib(args.pid))
    held = [c for c in closed_after if c is not None]
    latencies.sort()
    print(json.dumps({
        "connections": args.connections,
        "rss_before_mib": round(before, 1),
        "rss_peak_during_mib": round(max(during), 1),
        "rss_after_mib": round(after[-1], 1),
        "slow_refused_at_connect": closed_after.count(None),
        "slow_closed_by_server": sum(1 for c in held if c != float("inf")),
        "slow_still_open_at_end": sum(1 for c in held if c == float("inf")),
        "slowest_close_s": round(max((c for c in held if c != float("inf")), default=0), 1),
        "normal_ok": len(latencies),
        "normal_failed": len(failures),
        "normal_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "normal_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
    }))


asyncio.run(main())
