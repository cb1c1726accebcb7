"""psycopg 3 against PostgreSQL directly or through pglease: one line per check, exit status
non-zero when any fails. Usage: see tests/compat/README.md."""

import hashlib
import threading
import time
import uuid

import psycopg
from psycopg import errors, pq

import checks
from checks import expect

DRIVER = "psycopg"


def connect(args, **extra):
    """A connection in autocommit, so each statement outside BEGIN is its own transaction."""
    kwargs = dict(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        dbname=args.dbname,
        connect_timeout=10,
        autocommit=True,
    )
    if args.pooler_settings:
        # psycopg's documented setting for transaction poolers: never prepare by name.
        kwargs["prepare_threshold"] = None
    kwargs.update(extra)
    return psycopg.connect(**kwargs)


def one(conn, sql, params=None, **kw):
    """The single value of a one-row, one-column query."""
    row = conn.execute(sql, params, **kw).fetchone()
    expect(row is not None, f"{sql}: no row")
    return row[0]


def named_statements(args):
    # In every other round a second client holds an upstream in an open transaction, so that
    # through a transaction pooler the statements run where they were not prepared.
    with connect(args) as conn, connect(args) as other:
        conn.execute("CREATE TABLE ns (id int PRIMARY KEY, v text)")
        for i in range(6):
            if i % 2:
                other.execute("BEGIN")
                other.execute("SELECT 1")
            with conn.transaction():
                conn.execute("INSERT INTO ns VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
            got = one(conn, "SELECT v FROM ns WHERE id = %s", (i,), prepare=True)
            expect(got == f"v{i}", f"round {i}: got {got!r}")
            if i % 2:
                other.execute("COMMIT")
        total = one(conn, "SELECT count(*) FROM ns WHERE id >= %s", (0,), prepare=True)
        expect(total == 6, f"count {total}")


def shared_statement_names(args):
    # Each connection names its first prepared statement _pg3_0: same name, different SQL.
    with connect(args) as a, connect(args) as b:
        for i in range(5):
            got_a = one(a, "SELECT %s::int + 1000", (i,), prepare=True)
            got_b = one(b, "SELECT 'b:' || %s::text", (i,), prepare=True)
            expect(got_a == i + 1000, f"a round {i}: got {got_a!r}")
            expect(got_b == f"b:{i}", f"b round {i}: got {got_b!r}")


def binary_results(args):
    import datetime
    import decimal
    import uuid

    sql = (
        "SELECT %b::int4, %b::int8, 1.5::float8, '\\x00ff10'::bytea, 12345.678::numeric,"
        " '2024-02-29 12:34:56.789+00'::timestamptz,"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, ARRAY[1, 2, NULL]::int4[],"
        " 'h\u00e9llo'::text, NULL::int4"
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
    )
    with connect(args) as conn:
        cur = conn.cursor(binary=True)
        for _ in range(3):
            row = cur.execute(sql, (42, 9007199254740993)).fetchone()
            formats = {cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)}
            expect(formats == {1}, f"result formats {formats}, wanted binary")
            expect(row == want, f"got {row!r}")


def pipeline(args):
    with connect(args) as conn:
        conn.execute("CREATE TABLE pl (id int PRIMARY KEY)")
        with conn.pipeline():
            for i in range(300):
                conn.execute("INSERT INTO pl VALUES (%s)", (i,))
            echoes = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(100)]
            total = conn.execute("SELECT count(*), sum(id) FROM pl")
        for i, cur in enumerate(echoes):
            got = cur.fetchone()
            expect(got == (i * 2,), f"echo {i}: got {got!r}")
        got = total.fetchone()
        expect(got == (300, sum(range(300))), f"count/sum {got!r}")


def copy(args):
    with connect(args) as conn:
        conn.execute("CREATE TABLE cp (id int PRIMARY KEY, t text)")
        cur = conn.cursor()
        with cur.copy("COPY cp FROM STDIN") as cp:
            buf = bytearray()
            for line in checks.copy_lines():
                buf += line
                if len(buf) >= 65536:
                    cp.write(bytes(buf))
                    buf.clear()
            cp.write(bytes(buf))
        expect(cur.rowcount == checks.COPY_ROWS, f"COPY FROM copied {cur.rowcount}")
        h = hashlib.sha256()
        with cur.copy("COPY (SELECT * FROM cp ORDER BY id) TO STDOUT") as cp:
            for chunk in cp:
                h.update(chunk)
        expect(h.hexdigest() == checks.copy_digest(), "COPY TO bytes differ from COPY FROM's")


def large_result(args):
    with connect(args) as conn:
        rows = conn.execute(
            "SELECT i, repeat(chr(65 + mod(i, 26)), %s) FROM generate_series(1, %s) i",
            (checks.LARGE_WIDTH, checks.LARGE_ROWS),
        ).fetchall()
        expect(len(rows) == checks.LARGE_ROWS, f"{len(rows)} rows")
        for i, text in rows:
            if text != chr(65 + i % 26) * checks.LARGE_WIDTH:
                raise checks.CheckFailed(f"row {i} differs")
        expect(one(conn, "SELECT 1") == 1, "connection unusable after the large result")


def wait_running(watcher, marker):
    """Waits (up to 30 s) until a query containing `marker` is active upstream, so the cancel
    is sent while it runs, not before it started."""
    for _ in range(300):
        n = one(
            watcher,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND datname = current_database() AND query LIKE %s",
            (f"%{marker}%",),
        )
        if n >= 1:
            return
        time.sleep(0.1)
    raise checks.CheckFailed(f"query {marker} never seen running")


def cancel(args):
    marker = f"compat_cancel_psycopg_{uuid.uuid4().hex}"
    with connect(args) as conn, connect(args) as watcher:
        outcome = {}

        def sleeper():
            try:
                conn.execute(f"SELECT pg_sleep(60) /* {marker} */")
                outcome["error"] = "pg_sleep(60) finished: the cancel never arrived"
            except errors.QueryCanceled:
                outcome["ok"] = True
            except Exception as e:  # reported, not swallowed
                outcome["error"] = checks.describe(e)

        t = threading.Thread(target=sleeper)
        t.start()
        wait_running(watcher, marker)
        conn.cancel_safe(timeout=30)
        t.join(90)
        expect(not t.is_alive(), "query still running 90 s after cancel")
        expect(outcome.get("ok"), outcome.get("error", "no outcome"))
        expect(one(conn, "SELECT 1") == 1, "connection unusable after cancel")


def sqlstates(args):
    with connect(args) as conn:
        conn.execute("CREATE TABLE uq (id int PRIMARY KEY)")
        conn.execute("INSERT INTO uq VALUES (1)")
        cases = [
            ("INSERT INTO uq VALUES (1)", "23505"),
            ("SELECT 1 / 0", "22012"),
            ("SELECT * FROM no_such_table", "42P01"),
        ]
        for sql, code in cases:
            try:
                conn.execute(sql)
                raise checks.CheckFailed(f"{sql}: no error")
            except psycopg.Error as e:
                expect(e.sqlstate == code, f"{sql}: SQLSTATE {e.sqlstate}, wanted {code}")
            expect(one(conn, "SELECT 1") == 1, f"unusable after {code}")


def rollback_after_error(args):
    with connect(args) as conn:
        conn.execute("CREATE TABLE rb (id int PRIMARY KEY)")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO rb VALUES (1)")
        try:
            conn.execute("SELECT 1 / 0")
            raise checks.CheckFailed("1/0 gave no error")
        except errors.DivisionByZero:
            pass
        try:
            conn.execute("SELECT 1")
            raise checks.CheckFailed("a statement ran in an aborted transaction")
        except errors.InFailedSqlTransaction:
            pass
        status = conn.info.transaction_status
        expect(status == pq.TransactionStatus.INERROR, f"status {status!r}")
        conn.execute("ROLLBACK")
        expect(conn.info.transaction_status == pq.TransactionStatus.IDLE, "not idle")
        expect(one(conn, "SELECT count(*) FROM rb") == 0, "rolled-back row is visible")
        conn.execute("INSERT INTO rb VALUES (1)")


def set_isolation(args):
    with connect(args) as a, connect(args) as b:
        default = one(b, "SHOW work_mem")
        expect(default != "7777kB", "work_mem already 7777kB")
        a.execute("SET work_mem = '7777kB'")
        a.execute("SET application_name = 'compat_a'")
        got = a.info.parameter_status("application_name")
        expect(got == "compat_a", f"ParameterStatus application_name {got!r}")
        for i in range(5):
            expect(one(a, "SHOW work_mem") == "7777kB", f"round {i}: a lost its SET")
            expect(one(b, "SHOW work_mem") == default, f"round {i}: b sees a's SET")
            name = one(b, "SHOW application_name")
            expect(name != "compat_a", f"round {i}: b sees a's application_name")
        with a.transaction():
            a.execute("SET LOCAL work_mem = '1234kB'")
        expect(one(a, "SHOW work_mem") == "7777kB", "SET LOCAL outlived its transaction")
    with connect(args) as c:
        expect(one(c, "SHOW work_mem") == default, "a later client sees a's SET")
        expect(one(c, "SHOW application_name") != "compat_a", "a later client sees a's name")


def listen_notify(args):
    with connect(args) as listener, connect(args) as sender:
        listener.execute("LISTEN compat_chan")
        sender.execute("NOTIFY compat_chan, 'hello'")
        sender.execute("SELECT pg_notify('compat_chan', 'second')")
        got = [n.payload for n in listener.notifies(timeout=30, stop_after=2)]
        expect(got == ["hello", "second"], f"notifications {got!r}")


def main():
    args = checks.parse_args(DRIVER)
    failures = 0
    todo = checks.wanted(args)
    for name in todo:
        started = time.monotonic()
        try:
            globals()[name](args)
            checks.report(name, True, started)
        except Exception as e:
            failures += 1
            checks.report(name, False, started, checks.describe(e))
    checks.finish(DRIVER, failures, len(todo), args.skip)


if __name__ == "__main__":
    main()
