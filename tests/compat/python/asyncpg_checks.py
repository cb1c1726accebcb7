"""asyncpg against PostgreSQL directly or through pglease: one line per check, exit status
non-zero when any fails. Usage: see tests/compat/README.md."""

import asyncio
import datetime
import decimal
import hashlib
import io
import time
import uuid

import asyncpg

import checks
from checks import expect

DRIVER = "asyncpg"


async def connect(args):
    kwargs = dict(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        database=args.dbname,
        timeout=10,
    )
    if args.pooler_settings:
        # asyncpg's documented setting for transaction poolers: no statement cache, so every
        # query runs as an unnamed statement.
        kwargs["statement_cache_size"] = 0
    return await asyncpg.connect(**kwargs)


class Conns:
    """Connections closed at the end of a check, whatever happened."""

    def __init__(self, args, n):
        self.args, self.n, self.conns = args, n, []

    async def __aenter__(self):
        for _ in range(self.n):
            self.conns.append(await connect(self.args))
        return self.conns

    async def __aexit__(self, *exc):
        for c in self.conns:
            await c.close(timeout=10)


async def named_statements(args):
    # In every other round a second client holds an upstream in an open transaction, so that
    # through a transaction pooler the statements run where they were not prepared.
    async with Conns(args, 2) as (conn, other):
        await conn.execute("CREATE TABLE ns (id int PRIMARY KEY, v text)")
        insert = await conn.prepare("INSERT INTO ns VALUES ($1, $2)")
        select = await conn.prepare("SELECT v FROM ns WHERE id = $1")
        for i in range(6):
            held = other.transaction() if i % 2 else None
            if held:
                await held.start()
                await other.fetchval("SELECT 1")
            async with conn.transaction():
                await insert.fetch(i, f"v{i}")
            got = await select.fetchval(i)
            expect(got == f"v{i}", f"round {i}: got {got!r}")
            # The implicit cache prepares by name too: the same text again reuses it.
            got = await conn.fetchval("SELECT count(*) FROM ns WHERE id <= $1", i)
            expect(got == i + 1, f"round {i}: count {got}")
            if held:
                await held.commit()


async def shared_statement_names(args):
    async with Conns(args, 2) as (a, b):
        sa = await a.prepare("SELECT $1::int + 1000", name="compat_shared")
        sb = await b.prepare("SELECT 'b:' || $1::text", name="compat_shared")
        for i in range(5):
            got_a = await sa.fetchval(i)
            got_b = await sb.fetchval(str(i))
            expect(got_a == i + 1000, f"a round {i}: got {got_a!r}")
            expect(got_b == f"b:{i}", f"b round {i}: got {got_b!r}")


async def binary_results(args):
    # asyncpg asks for binary results for every type it has a codec for.
    sql = (
        "SELECT $1::int4, $2::int8, 1.5::float8, '\\x00ff10'::bytea, 12345.678::numeric,"
        " '2024-02-29 12:34:56.789+00'::timestamptz,"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, ARRAY[1, 2, NULL]::int4[],"
        " 'h\u00e9llo'::text, NULL::int4, '{\"k\": [1, 2]}'::jsonb"
    )
    want = (
        42,
        9007199254740993,
        1.5,
        b"\x00\xff\x10",
        decimal.Decimal("12345.678"),
        datetime.datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=datetime.timezone.utc),
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        [1, 2, None],
        "h\u00e9llo",
        None,
        '{"k": [1, 2]}',
    )
    async with Conns(args, 1) as (conn,):
        for _ in range(3):
            row = await conn.fetchrow(sql, 42, 9007199254740993)
            expect(tuple(row) == want, f"got {tuple(row)!r}")


async def pipeline(args):
    # executemany sends every Bind/Execute before it reads a reply.
    async with Conns(args, 1) as (conn,):
        await conn.execute("CREATE TABLE pl (id int PRIMARY KEY, v text)")
        rows = [(i, f"v{i}") for i in range(1000)]
        await conn.executemany("INSERT INTO pl VALUES ($1, $2)", rows)
        got = await conn.fetchrow("SELECT count(*), sum(id) FROM pl")
        expect(tuple(got) == (1000, sum(range(1000))), f"count/sum {tuple(got)!r}")
        try:
            await conn.executemany("INSERT INTO pl VALUES ($1, $2)", [(5000, "a"), (1, "dup")])
            raise checks.CheckFailed("duplicate in executemany gave no error")
        except asyncpg.UniqueViolationError:
            pass
        got = await conn.fetchval("SELECT count(*) FROM pl")
        expect(got == 1000, f"a failed executemany left {got - 1000} rows")


async def copy(args):
    async with Conns(args, 1) as (conn,):
        await conn.execute("CREATE TABLE cp (id int PRIMARY KEY, t text)")
        source = io.BytesIO(b"".join(checks.copy_lines()))
        status = await conn.copy_to_table("cp", source=source)
        expect(status == f"COPY {checks.COPY_ROWS}", f"COPY FROM status {status!r}")
        sink = io.BytesIO()
        await conn.copy_from_query("SELECT * FROM cp ORDER BY id", output=sink)
        digest = hashlib.sha256(sink.getvalue()).hexdigest()
        expect(digest == checks.copy_digest(), "COPY TO bytes differ from COPY FROM's")


async def large_result(args):
    async with Conns(args, 1) as (conn,):
        rows = await conn.fetch(
            "SELECT i, repeat(chr(65 + i % 26), $1) FROM generate_series(1, $2) i",
            checks.LARGE_WIDTH,
            checks.LARGE_ROWS,
        )
        expect(len(rows) == checks.LARGE_ROWS, f"{len(rows)} rows")
        for i, text in rows:
            if text != chr(65 + i % 26) * checks.LARGE_WIDTH:
                raise checks.CheckFailed(f"row {i} differs")
        expect(await conn.fetchval("SELECT 1") == 1, "unusable after the large result")


async def wait_running(watcher, marker):
    """Waits (up to 30 s) until the query carrying `marker` is active upstream."""
    for _ in range(300):
        n = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND datname = current_database() AND query LIKE $1",
            f"%{marker}%",
        )
        if n >= 1:
            return
        await asyncio.sleep(0.1)
    raise checks.CheckFailed(f"query {marker} never seen running")


async def cancel(args):
    # Cancelling the awaiting task makes asyncpg send a CancelRequest and wait for the
    # query's end before the connection takes the next one.
    marker = f"compat_cancel_asyncpg_{uuid.uuid4().hex}"
    async with Conns(args, 2) as (conn, watcher):
        task = asyncio.create_task(conn.execute(f"SELECT pg_sleep(60) /* {marker} */"))
        await wait_running(watcher, marker)
        task.cancel()
        try:
            await task
            raise checks.CheckFailed("pg_sleep(60) finished: the cancel never arrived")
        except asyncio.CancelledError:
            pass
        try:
            got = await asyncio.wait_for(conn.fetchval("SELECT 1"), 40)
        except asyncio.TimeoutError:
            raise checks.CheckFailed("the sleep kept running: the cancel did not reach it")
        expect(got == 1, f"SELECT 1 gave {got!r}")


async def sqlstates(args):
    async with Conns(args, 1) as (conn,):
        await conn.execute("CREATE TABLE uq (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO uq VALUES (1)")
        cases = [
            ("INSERT INTO uq VALUES (1)", "23505"),
            ("SELECT 1 / 0", "22012"),
            ("SELECT * FROM no_such_table", "42P01"),
        ]
        for sql, code in cases:
            for run in (conn.execute, conn.fetch):  # simple and extended protocol
                try:
                    await run(sql)
                    raise checks.CheckFailed(f"{sql}: no error")
                except asyncpg.PostgresError as e:
                    expect(e.sqlstate == code, f"{sql}: SQLSTATE {e.sqlstate}, wanted {code}")
                expect(await conn.fetchval("SELECT 1") == 1, f"unusable after {code}")


async def rollback_after_error(args):
    async with Conns(args, 1) as (conn,):
        await conn.execute("CREATE TABLE rb (id int PRIMARY KEY)")
        tx = conn.transaction()
        await tx.start()
        await conn.execute("INSERT INTO rb VALUES (1)")
        try:
            await conn.fetch("SELECT 1 / 0")
            raise checks.CheckFailed("1/0 gave no error")
        except asyncpg.DivisionByZeroError:
            pass
        try:
            await conn.fetch("SELECT 1")
            raise checks.CheckFailed("a statement ran in an aborted transaction")
        except asyncpg.InFailedSQLTransactionError:
            pass
        await tx.rollback()
        expect(not conn.is_in_transaction(), "still in a transaction after rollback")
        expect(await conn.fetchval("SELECT count(*) FROM rb") == 0, "rolled-back row visible")
        await conn.execute("INSERT INTO rb VALUES (1)")


async def set_isolation(args):
    async with Conns(args, 2) as (a, b):
        default = await b.fetchval("SHOW work_mem")
        expect(default != "7777kB", "work_mem already 7777kB")
        await a.execute("SET work_mem = '7777kB'; SET application_name = 'compat_a'")
        got = a.get_settings().application_name
        expect(got == "compat_a", f"ParameterStatus application_name {got!r}")
        for i in range(5):
            expect(await a.fetchval("SHOW work_mem") == "7777kB", f"round {i}: a lost its SET")
            expect(await b.fetchval("SHOW work_mem") == default, f"round {i}: b sees a's SET")
            name = await b.fetchval("SHOW application_name")
            expect(name != "compat_a", f"round {i}: b sees a's application_name")
    async with Conns(args, 1) as (c,):
        expect(await c.fetchval("SHOW work_mem") == default, "a later client sees a's SET")
        name = await c.fetchval("SHOW application_name")
        expect(name != "compat_a", "a later client sees a's application_name")


async def listen_notify(args):
    async with Conns(args, 2) as (listener, sender):
        got = asyncio.Queue()
        await listener.add_listener("compat_chan", lambda *a: got.put_nowait(a[3]))
        await sender.execute("NOTIFY compat_chan, 'hello'")
        await sender.execute("SELECT pg_notify('compat_chan', 'second')")
        payloads = [await asyncio.wait_for(got.get(), 30) for _ in range(2)]
        expect(payloads == ["hello", "second"], f"notifications {payloads!r}")


async def main():
    args = checks.parse_args(DRIVER)
    failures = 0
    todo = checks.wanted(args)
    for name in todo:
        started = time.monotonic()
        try:
            await asyncio.wait_for(globals()[name](args), 120)
            checks.report(name, True, started)
        except Exception as e:
            failures += 1
            checks.report(name, False, started, checks.describe(e))
    checks.finish(DRIVER, failures, len(todo), args.skip)


if __name__ == "__main__":
    asyncio.run(main())
