"""Client side of benches/idle_clients.sh: opens many authenticated connections with asyncpg.

    idle_clients.py hold N PORT     open N clients (with IDLE_QUERY=1, the default, each then
                                    runs SELECT 1), print "open N", hold them idle until a line
                                    (or EOF) arrives on stdin, close them all, print "closed"
    idle_clients.py cycle N PORT    open N clients, run SELECT 1 on each, close them all, print
                                    "cycled N"

The password comes from PGPASSWORD, the user and database are `bench`. Logins (and the
queries) run at most CONNECT_CONCURRENCY at a time, so the proxy sees a steady stream of SCRAM exchanges rather
than N at once (which would measure its login queue, not its idle clients).
"""

import asyncio
import os
import sys

import asyncpg

CONNECT_CONCURRENCY = int(os.environ.get("CONNECT_CONCURRENCY", "64"))


async def open_all(n, port):
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one():
        async with gate:
            # No statement cache: nothing is prepared behind the benchmark's back.
            return await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user="bench",
                database="bench",
                password=os.environ["PGPASSWORD"],
                ssl=False,
                statement_cache_size=0,
                timeout=120,
            )

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    conns = [r for r in results if isinstance(r, asyncpg.Connection)]
    errors = [r for r in results if not isinstance(r, asyncpg.Connection)]
    if errors:
        for c in conns:
            c.terminate()
        raise SystemExit(f"{len(errors)} of {n} logins failed; first: {errors[0]!r}")
    return conns


async def close_all(conns):
    await asyncio.gather(*(c.close(timeout=60) for c in conns))


async def hold(n, port):
    conns = await open_all(n, port)
    if os.environ.get("IDLE_QUERY", "1") == "1":
        await select_one(conns)
    print(f"open {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await close_all(conns)
    print("closed", flush=True)


async def select_one(conns):
    # As many at once as logins: a client that ran a query and went idle is measured, not
    # N requests queued for the pool together.
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(c):
        async with gate:
            return await c.fetchval("SELECT 1")

    values = await asyncio.gather(*(one(c) for c in conns))
    if any(v != 1 for v in values):
        raise SystemExit("SELECT 1 returned something else")


async def cycle(n, port):
    conns = await open_all(n, port)
    await select_one(conns)
    await close_all(conns)
    print(f"cycled {len(conns)}", flush=True)


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("hold", "cycle"):
        raise SystemExit(__doc__)
    mode, n, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(hold(n, port) if mode == "hold" else cycle(n, port))


if __name__ == "__main__":
    main()
