"""bench/link_engines.py: the round trip of a carried request through two
message engines, Redis Streams and NATS JetStream, from the same Python
process (run by bench/link_engines.sh, which starts both servers).

A round trip is what tradsys's links do for one carried request: the
sender appends a request to the receiver's stream and waits for the
engine's acknowledgement, the receiver reads it and appends a reply to the
sender's stream, and the sender reads the reply. One request at a time;
the receiver runs in the same event loop. Prints one RESULT line per
engine: p50, p99 and the mean in microseconds over COUNT round trips,
after WARMUP.
"""

import argparse
import asyncio
import statistics
import time

import nats
import redis.asyncio as aioredis

PAYLOAD = b"x" * 200


def summary(engine, samples):
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    print(f"RESULT engine={engine} round_trips={len(samples)} p50_us={p(0.5):.0f} p99_us={p(0.99):.0f} "
          f"mean_us={statistics.mean(samples):.0f}", flush=True)


async def redis_trips(port, count, warmup):
    r = aioredis.Redis(host="127.0.0.1", port=port)
    echo = aioredis.Redis(host="127.0.0.1", port=port)
    for key in ("req", "rep"):
        await r.delete(key)
        await r.xgroup_create(key, "g", id="$", mkstream=True)

    async def receiver():
        while True:
            got = await echo.xreadgroup("g", "b", {"req": ">"}, count=64, block=500, noack=True)
            for _, entries in got or []:
                for _, fields in entries:
                    await echo.xadd("rep", {"reply": fields[b"request"]}, maxlen=100000, approximate=True)

    task = asyncio.create_task(receiver())
    samples = []
    for i in range(warmup + count):
        start = time.perf_counter()
        await r.xadd("req", {"request": PAYLOAD}, maxlen=100000, approximate=True)
        got = None
        while not got:
            got = await r.xreadgroup("g", "a", {"rep": ">"}, count=1, block=500, noack=True)
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e6)
    task.cancel()
    summary("redis-streams", samples)


async def nats_trips(port, count, warmup):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    for name, subject in (("REQ", "req"), ("REP", "rep")):
        try:
            await js.delete_stream(name)
        except Exception:
            pass
        await js.add_stream(name=name, subjects=[subject], storage="file")
    replies = asyncio.Queue()

    async def on_request(msg):
        await js.publish("rep", msg.data)
        await msg.ack()

    async def on_reply(msg):
        await msg.ack()
        await replies.put(msg.data)

    subs = [
        await js.subscribe("req", durable="b", cb=on_request, manual_ack=True),
        await js.subscribe("rep", durable="a", cb=on_reply, manual_ack=True),
    ]
    samples = []
    for i in range(warmup + count):
        start = time.perf_counter()
        await js.publish("req", PAYLOAD)
        await replies.get()
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1e6)
    summary("nats-jetstream", samples)
    for sub in subs:
        await sub.unsubscribe()
    await nc.drain()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--nats-port", type=int, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(redis_trips(args.redis_port, args.count, args.warmup))
    asyncio.run(nats_trips(args.nats_port, args.count, args.warmup))


if __name__ == "__main__":
    main()
