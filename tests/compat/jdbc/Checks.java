// pgjdbc against PostgreSQL directly or through pglease: one line per check, exit status
// non-zero when any fails. Run with Java's single-file launcher; usage: tests/compat/README.md.
// One file on purpose: Java 17's launcher compiles a single source file, so no build step.

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicReference;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class Checks {
    static final String DRIVER = "pgjdbc";
    static final int LARGE_ROWS = 10_000;
    static final int LARGE_WIDTH = 1_000;
    static final int COPY_ROWS = 50_000;

    /** A check saw something other than what PostgreSQL gives directly. */
    static class CheckFailed extends Exception {
        CheckFailed(String what) {
            super(what);
        }
    }

    interface Check {
        void run() throws Exception;
    }

    static void expect(boolean cond, String what) throws CheckFailed {
        if (!cond) {
            throw new CheckFailed(what);
        }
    }

    final Map<String, String> opts;

    Checks(Map<String, String> opts) {
        this.opts = opts;
    }

    Connection connect() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", opts.get("user"));
        p.setProperty("password", opts.get("password"));
        p.setProperty("connectTimeout", "10");
        if (opts.containsKey("pooler-settings")) {
            // pgjdbc's documented setting for transaction poolers: never prepare by name.
            p.setProperty("prepareThreshold", "0");
        }
        String url = "jdbc:postgresql://" + opts.get("host") + ":" + opts.get("port") + "/"
                + opts.get("dbname");
        return DriverManager.getConnection(url, p);
    }

    static Object one(Connection c, String sql) throws Exception {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            expect(rs.next(), sql + ": no row");
            return rs.getObject(1);
        }
    }

    void namedStatements() throws Exception {
        // In every other round a second client holds an upstream in an open transaction, so
        // that through a transaction pooler the statements run where they were not prepared.
        try (Connection c = connect(); Connection other = connect()) {
            other.setAutoCommit(false);
            c.createStatement().execute("CREATE TABLE ns (id int PRIMARY KEY, v text)");
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO ns VALUES (?, ?)");
                    PreparedStatement sel = c.prepareStatement("SELECT v FROM ns WHERE id = ?")) {
                ins.unwrap(PGStatement.class).setPrepareThreshold(1);
                sel.unwrap(PGStatement.class).setPrepareThreshold(1);
                for (int i = 0; i < 6; i++) {
                    if (i % 2 == 1) {
                        one(other, "SELECT 1");
                    }
                    ins.setInt(1, i);
                    ins.setString(2, "v" + i);
                    ins.executeUpdate();
                    c.commit();
                    sel.setInt(1, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        expect(rs.next() && ("v" + i).equals(rs.getString(1)), "round " + i);
                    }
                    c.commit();
                    if (i % 2 == 1) {
                        other.commit();
                    }
                }
                expect(sel.unwrap(PGStatement.class).isUseServerPrepare(),
                        "pgjdbc never prepared the statement by name");
            }
        }
    }

    void sharedStatementNames() throws Exception {
        // pgjdbc names each connection's first server-prepared statement S_1.
        try (Connection a = connect(); Connection b = connect();
                PreparedStatement sa = a.prepareStatement("SELECT ?::int + 1000");
                PreparedStatement sb = b.prepareStatement("SELECT 'b:' || ?::text")) {
            sa.unwrap(PGStatement.class).setPrepareThreshold(1);
            sb.unwrap(PGStatement.class).setPrepareThreshold(1);
            for (int i = 0; i < 6; i++) {
                sa.setInt(1, i);
                sb.setString(1, Integer.toString(i));
                try (ResultSet ra = sa.executeQuery(); ResultSet rb = sb.executeQuery()) {
                    expect(ra.next() && ra.getInt(1) == i + 1000, "a round " + i);
                    expect(rb.next() && ("b:" + i).equals(rb.getString(1)), "b round " + i);
                }
            }
            expect(sa.unwrap(PGStatement.class).isUseServerPrepare(), "a never prepared by name");
        }
    }

    void binaryResults() throws Exception {
        String sql = "SELECT ?::int4, 9007199254740993::int8, 1.5::float8, '\\x00ff10'::bytea,"
                + " 12345.678::numeric, '2024-02-29 12:34:56.789+00'::timestamptz,"
                + " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, ARRAY[1, 2, 3]::int4[],"
                + " 'h\u00e9llo'::text, NULL::int4";
        try (Connection c = connect(); PreparedStatement ps = c.prepareStatement(sql)) {
            // -1: prepare by name at once and ask for binary results.
            ps.unwrap(PGStatement.class).setPrepareThreshold(-1);
            for (int round = 0; round < 3; round++) {
                ps.setInt(1, 42);
                try (ResultSet rs = ps.executeQuery()) {
                    expect(rs.next(), "no row");
                    expect(rs.getInt(1) == 42, "int4 " + rs.getInt(1));
                    expect(rs.getLong(2) == 9007199254740993L, "int8 " + rs.getLong(2));
                    expect(rs.getDouble(3) == 1.5, "float8 " + rs.getDouble(3));
                    expect(Arrays.equals(rs.getBytes(4), new byte[] {0, (byte) 0xff, 0x10}),
                            "bytea " + HexFormat.of().formatHex(rs.getBytes(4)));
                    expect(rs.getBigDecimal(5).compareTo(new BigDecimal("12345.678")) == 0,
                            "numeric " + rs.getBigDecimal(5));
                    OffsetDateTime ts = rs.getObject(6, OffsetDateTime.class);
                    OffsetDateTime want = OffsetDateTime.of(2024, 2, 29, 12, 34, 56, 789_000_000,
                            ZoneOffset.UTC);
                    expect(ts.isEqual(want), "timestamptz " + ts);
                    expect(rs.getObject(7, UUID.class)
                            .equals(UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
                            "uuid " + rs.getObject(7));
                    Array arr = rs.getArray(8);
                    expect(Arrays.equals((Integer[]) arr.getArray(), new Integer[] {1, 2, 3}),
                            "int4[] " + arr);
                    expect("h\u00e9llo".equals(rs.getString(9)), "text " + rs.getString(9));
                    rs.getInt(10);
                    expect(rs.wasNull(), "null");
                }
            }
        }
    }

    void pipeline() throws Exception {
        // A batch sends every Bind/Execute before one Sync and reads the replies after.
        try (Connection c = connect()) {
            c.createStatement().execute("CREATE TABLE pl (id int PRIMARY KEY)");
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO pl VALUES (?)")) {
                for (int i = 0; i < 1000; i++) {
                    ps.setInt(1, i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                expect(counts.length == 1000, counts.length + " batch results");
            }
            c.commit();
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO pl VALUES (?)")) {
                for (int id : new int[] {5000, 1, 5001}) {
                    ps.setInt(1, id);
                    ps.addBatch();
                }
                ps.executeBatch();
                throw new CheckFailed("a duplicate in a batch gave no error");
            } catch (SQLException e) {
                expect("23505".equals(sqlState(e)), "batch error " + sqlState(e));
                c.rollback();
            }
            Object n = one(c, "SELECT count(*) FROM pl");
            expect(((Long) n) == 1000, "count " + n);
            c.commit();
        }
    }

    /** The SQLSTATE of `e` or of what it wraps (a batch reports it on the next exception). */
    static String sqlState(SQLException e) {
        for (SQLException x = e; x != null; x = x.getNextException()) {
            if (x.getSQLState() != null && !x.getSQLState().startsWith("0")) {
                return x.getSQLState();
            }
        }
        return e.getSQLState();
    }

    void copy() throws Exception {
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= COPY_ROWS; i++) {
            sb.append(i).append("\trow ").append(i).append(" \\\\ caf\u00e9 ")
                    .append((long) i * 7919 % 10007).append('\n');
        }
        byte[] data = sb.toString().getBytes(StandardCharsets.UTF_8);
        try (Connection c = connect()) {
            c.createStatement().execute("CREATE TABLE cp (id int PRIMARY KEY, t text)");
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            long in = cm.copyIn("COPY cp FROM STDIN", new ByteArrayInputStream(data));
            expect(in == COPY_ROWS, "COPY FROM copied " + in);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            long outRows = cm.copyOut("COPY (SELECT * FROM cp ORDER BY id) TO STDOUT", out);
            expect(outRows == COPY_ROWS, "COPY TO copied " + outRows);
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            expect(Arrays.equals(sha.digest(data), sha.digest(out.toByteArray())),
                    "COPY TO bytes differ from COPY FROM's");
        }
    }

    void largeResult() throws Exception {
        String sql = "SELECT i, repeat(chr(65 + i % 26), " + LARGE_WIDTH
                + ") FROM generate_series(1, " + LARGE_ROWS + ") i";
        try (Connection c = connect()) {
            readLarge(c, sql, 0);
            // A fetch size reads through a portal, a few Executes within one transaction.
            c.setAutoCommit(false);
            readLarge(c, sql, 1000);
            c.commit();
            expect(((Integer) one(c, "SELECT 1")) == 1, "unusable after the large result");
        }
    }

    static void readLarge(Connection c, String sql, int fetchSize) throws Exception {
        try (Statement st = c.createStatement()) {
            st.setFetchSize(fetchSize);
            int rows = 0;
            try (ResultSet rs = st.executeQuery(sql)) {
                while (rs.next()) {
                    int i = rs.getInt(1);
                    String want = String.valueOf((char) (65 + i % 26)).repeat(LARGE_WIDTH);
                    expect(want.equals(rs.getString(2)), "row " + i + " differs");
                    rows++;
                }
            }
            expect(rows == LARGE_ROWS, rows + " rows with fetch size " + fetchSize);
        }
    }

    void cancel() throws Exception {
        String marker = "compat_cancel_jdbc_" + UUID.randomUUID().toString().replace("-", "");
        try (Connection c = connect(); Connection watcher = connect();
                Statement st = c.createStatement()) {
            AtomicReference<String> outcome = new AtomicReference<>("no outcome");
            Thread t = new Thread(() -> {
                try {
                    st.execute("SELECT pg_sleep(60) /* " + marker + " */");
                    outcome.set("pg_sleep(60) finished: the cancel never arrived");
                } catch (SQLException e) {
                    outcome.set("57014".equals(e.getSQLState()) ? "ok"
                            : "SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
                }
            });
            t.start();
            waitRunning(watcher, marker);
            st.cancel();
            t.join(90_000);
            expect(!t.isAlive(), "query still running 90 s after cancel");
            expect("ok".equals(outcome.get()), outcome.get());
            expect(((Integer) one(c, "SELECT 1")) == 1, "unusable after cancel");
        }
    }

    /** Waits (up to 30 s) until the query carrying `marker` is active upstream. */
    static void waitRunning(Connection watcher, String marker) throws Exception {
        String sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                + " AND datname = current_database() AND query LIKE ?";
        try (PreparedStatement ps = watcher.prepareStatement(sql)) {
            ps.setString(1, "%" + marker + "%");
            for (int i = 0; i < 300; i++) {
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) >= 1) {
                        return;
                    }
                }
                Thread.sleep(100);
            }
        }
        throw new CheckFailed("query " + marker + " never seen running");
    }

    void sqlstates() throws Exception {
        try (Connection c = connect()) {
            c.createStatement().execute("CREATE TABLE uq (id int PRIMARY KEY)");
            c.createStatement().execute("INSERT INTO uq VALUES (1)");
            String[][] cases = {
                {"INSERT INTO uq VALUES (1)", "23505"},
                {"SELECT 1 / 0", "22012"},
                {"SELECT * FROM no_such_table", "42P01"},
            };
            for (String[] kase : cases) {
                try (Statement st = c.createStatement()) {
                    st.execute(kase[0]);
                    throw new CheckFailed(kase[0] + ": no error");
                } catch (SQLException e) {
                    expect(kase[1].equals(e.getSQLState()),
                            kase[0] + ": SQLSTATE " + e.getSQLState() + ", wanted " + kase[1]);
                }
                expect(((Integer) one(c, "SELECT 1")) == 1, "unusable after " + kase[1]);
            }
        }
    }

    void rollbackAfterError() throws Exception {
        try (Connection c = connect()) {
            c.createStatement().execute("CREATE TABLE rb (id int PRIMARY KEY)");
            c.setAutoCommit(false);
            c.createStatement().execute("INSERT INTO rb VALUES (1)");
            expectState(c, "SELECT 1 / 0", "22012");
            expectState(c, "SELECT 1", "25P02");
            c.rollback();
            expect(((Long) one(c, "SELECT count(*) FROM rb")) == 0, "rolled-back row visible");
            c.createStatement().execute("INSERT INTO rb VALUES (1)");
            c.commit();
        }
    }

    static void expectState(Connection c, String sql, String code) throws Exception {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
            throw new CheckFailed(sql + ": no error");
        } catch (SQLException e) {
            expect(code.equals(e.getSQLState()), sql + ": SQLSTATE " + e.getSQLState());
        }
    }

    void setIsolation() throws Exception {
        String fallback;
        try (Connection a = connect(); Connection b = connect()) {
            fallback = (String) one(b, "SHOW work_mem");
            expect(!"7777kB".equals(fallback), "work_mem already 7777kB");
            a.createStatement().execute("SET work_mem = '7777kB'");
            a.createStatement().execute("SET application_name = 'compat_a'");
            String status = a.unwrap(PGConnection.class).getParameterStatus("application_name");
            expect("compat_a".equals(status), "ParameterStatus application_name " + status);
            for (int i = 0; i < 5; i++) {
                expect("7777kB".equals(one(a, "SHOW work_mem")), "round " + i + ": a lost its SET");
                expect(fallback.equals(one(b, "SHOW work_mem")), "round " + i + ": b sees a's SET");
                expect(!"compat_a".equals(one(b, "SHOW application_name")),
                        "round " + i + ": b sees a's application_name");
            }
        }
        try (Connection c = connect()) {
            expect(fallback.equals(one(c, "SHOW work_mem")), "a later client sees a's SET");
            expect(!"compat_a".equals(one(c, "SHOW application_name")),
                    "a later client sees a's application_name");
        }
    }

    void listenNotify() throws Exception {
        try (Connection listener = connect(); Connection sender = connect()) {
            listener.createStatement().execute("LISTEN compat_chan");
            sender.createStatement().execute("NOTIFY compat_chan, 'hello'");
            one(sender, "SELECT pg_notify('compat_chan', 'second')");
            List<String> got = new ArrayList<>();
            PGConnection pgl = listener.unwrap(PGConnection.class);
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (got.size() < 2 && System.nanoTime() < deadline) {
                PGNotification[] ns = pgl.getNotifications(1000);
                if (ns != null) {
                    for (PGNotification n : ns) {
                        got.add(n.getParameter());
                    }
                }
            }
            expect(got.equals(List.of("hello", "second")), "notifications " + got);
        }
    }

    Map<String, Check> checks() {
        Map<String, Check> m = new LinkedHashMap<>();
        m.put("named_statements", this::namedStatements);
        m.put("shared_statement_names", this::sharedStatementNames);
        m.put("binary_results", this::binaryResults);
        m.put("pipeline", this::pipeline);
        m.put("copy", this::copy);
        m.put("large_result", this::largeResult);
        m.put("cancel", this::cancel);
        m.put("sqlstates", this::sqlstates);
        m.put("rollback_after_error", this::rollbackAfterError);
        m.put("set_isolation", this::setIsolation);
        m.put("listen_notify", this::listenNotify);
        return m;
    }

    static Map<String, String> parse(String[] argv) {
        Map<String, String> o = new LinkedHashMap<>();
        o.put("host", "127.0.0.1");
        o.put("skip", "");
        o.put("only", "");
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("unexpected argument " + argv[i]);
            }
            String key = argv[i].substring(2);
            if (key.equals("pooler-settings")) {
                o.put(key, "");
            } else if (i + 1 < argv.length) {
                o.put(key, argv[++i]);
            } else {
                throw new IllegalArgumentException("--" + key + " needs a value");
            }
        }
        for (String k : List.of("port", "user", "password", "dbname", "mode")) {
            if (!o.containsKey(k)) {
                throw new IllegalArgumentException("--" + k + " is required");
            }
        }
        if (!Set.of("direct", "session", "transaction").contains(o.get("mode"))) {
            throw new IllegalArgumentException("--mode must be direct, session or transaction");
        }
        return o;
    }

    static Set<String> list(String s) {
        Set<String> out = new TreeSet<>();
        for (String x : s.split(",")) {
            if (!x.isEmpty()) {
                out.add(x);
            }
        }
        return out;
    }

    public static void main(String[] argv) {
        Checks self = new Checks(parse(argv));
        Map<String, Check> all = self.checks();
        Set<String> skip = list(self.opts.get("skip"));
        Set<String> only = list(self.opts.get("only"));
        for (String name : concat(skip, only)) {
            if (!all.containsKey(name)) {
                throw new IllegalArgumentException("unknown check " + name);
            }
        }
        int ran = 0;
        int failures = 0;
        for (Map.Entry<String, Check> e : all.entrySet()) {
            String name = e.getKey();
            if (skip.contains(name) || (!only.isEmpty() && !only.contains(name))) {
                continue;
            }
            ran++;
            long started = System.nanoTime();
            try {
                e.getValue().run();
                System.out.printf("ok   %s (%.2fs)%n", name, (System.nanoTime() - started) / 1e9);
            } catch (Exception ex) {
                failures++;
                String why = ex instanceof CheckFailed ? ex.getMessage() : ex.toString();
                if (ex instanceof SQLException sql) {
                    why = "SQLSTATE " + sql.getSQLState() + ": " + why;
                }
                System.out.printf("FAIL %s (%.2fs): %s%n", name,
                        (System.nanoTime() - started) / 1e9, why.replace('\n', ' '));
            }
            System.out.flush();
        }
        System.out.printf("%s: %d passed, %d failed, %d skipped%s%n", DRIVER, ran - failures,
                failures, skip.size(), skip.isEmpty() ? "" : " (" + String.join(", ", skip) + ")");
        if (ran == 0) {
            System.out.println(DRIVER + ": no check ran");
            System.exit(2);
        }
        System.exit(failures == 0 ? 0 : 1);
    }

    static List<String> concat(Set<String> a, Set<String> b) {
        List<String> out = new ArrayList<>(a);
        out.addAll(b);
        return out;
    }
}
