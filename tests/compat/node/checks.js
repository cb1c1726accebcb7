// node-postgres against PostgreSQL directly or through pglease: one line per check, exit
// status non-zero when any fails. Usage: see tests/compat/README.md.
'use strict'

const crypto = require('node:crypto')
const { Readable } = require('node:stream')
const { pipeline: streamPipeline } = require('node:stream/promises')
const { parseArgs } = require('node:util')
const pg = require('pg')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

const DRIVER = 'node-postgres'
const ALL_CHECKS = [
  'named_statements',
  'shared_statement_names',
  'binary_results',
  'pipeline',
  'copy',
  'large_result',
  'cancel',
  'sqlstates',
  'rollback_after_error',
  'set_isolation',
  'listen_notify',
]
const LARGE_ROWS = 10000
const LARGE_WIDTH = 1000
const COPY_ROWS = 50000

class CheckFailed extends Error {}

function expect(cond, what) {
  if (!cond) throw new CheckFailed(what)
}

function options() {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      user: { type: 'string' },
      password: { type: 'string' },
      dbname: { type: 'string' },
      mode: { type: 'string' },
      skip: { type: 'string', default: '' },
      only: { type: 'string', default: '' },
      // node-postgres only prepares by name when a query has a `name`: nothing to turn off.
      'pooler-settings': { type: 'boolean', default: false },
    },
  })
  for (const key of ['port', 'user', 'password', 'dbname', 'mode']) {
    if (values[key] === undefined) throw new Error(`--${key} is required`)
  }
  if (!['direct', 'session', 'transaction'].includes(values.mode)) {
    throw new Error(`--mode must be direct, session or transaction`)
  }
  const list = (s) => s.split(',').filter((x) => x)
  values.skip = list(values.skip)
  values.only = list(values.only)
  for (const c of [...values.skip, ...values.only]) {
    if (!ALL_CHECKS.includes(c)) throw new Error(`unknown check ${c}`)
  }
  return values
}

function clientConfig(args) {
  return {
    host: args.host,
    port: Number(args.port),
    user: args.user,
    password: args.password,
    database: args.dbname,
    connectionTimeoutMillis: 10000,
  }
}

// Connections opened by `fn`, closed afterwards whatever happened.
async function withClients(args, n, fn, extra = {}) {
  const clients = []
  try {
    for (let i = 0; i < n; i++) {
      const c = new pg.Client({ ...clientConfig(args), ...extra })
      clients.push(c)
      await c.connect()
    }
    return await fn(...clients)
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})))
  }
}

async function one(client, query, values) {
  const res = await client.query(query, values)
  expect(res.rows.length === 1, `${query.text || query}: ${res.rows.length} rows`)
  return Object.values(res.rows[0])[0]
}

const checks = {
  async named_statements(args) {
    // In every other round a second client holds an upstream in an open transaction, so that
    // through a transaction pooler the statements run where they were not prepared.
    await withClients(args, 2, async (c, other) => {
      await c.query('CREATE TABLE ns (id int PRIMARY KEY, v text)')
      for (let i = 0; i < 6; i++) {
        if (i % 2) {
          await other.query('BEGIN')
          await other.query('SELECT 1')
        }
        await c.query('BEGIN')
        await c.query({ name: 'ns_insert', text: 'INSERT INTO ns VALUES ($1, $2)', values: [i, `v${i}`] })
        await c.query('COMMIT')
        const got = await one(c, { name: 'ns_select', text: 'SELECT v FROM ns WHERE id = $1', values: [i] })
        expect(got === `v${i}`, `round ${i}: got ${got}`)
        if (i % 2) await other.query('COMMIT')
      }
    })
  },

  async shared_statement_names(args) {
    await withClients(args, 2, async (a, b) => {
      for (let i = 0; i < 5; i++) {
        const gotA = await one(a, { name: 'compat_shared', text: 'SELECT $1::int + 1000 AS v', values: [i] })
        const gotB = await one(b, { name: 'compat_shared', text: "SELECT 'b:' || $1::text AS v", values: [i] })
        expect(gotA === i + 1000, `a round ${i}: got ${gotA}`)
        expect(gotB === `b:${i}`, `b round ${i}: got ${gotB}`)
      }
    })
  },

  async binary_results(args) {
    // Only values whose binary form is valid UTF-8: node-postgres decodes every field as a
    // string before the binary parser sees it, so float, bytea, timestamptz and others come back mangled
    // from PostgreSQL itself (1.5::float8 reads as 0.99).
    const text =
      "SELECT $1::int4 AS a, 9007199254740993::int8 AS b, 7::int2 AS c," +
      " true AS e, ARRAY[1, 2, 3]::int4[] AS g," +
      " 'h\u00e9llo'::text AS h, NULL::int4 AS i"
    await withClients(args, 1, async (c) => {
      for (let round = 0; round < 3; round++) {
        const res = await c.query({ text, values: [42], binary: true })
        const formats = new Set(res.fields.map((f) => f.format))
        expect(formats.size === 1 && formats.has('binary'), `formats ${[...formats]}`)
        const r = res.rows[0]
        expect(r.a === 42, `int4 ${r.a}`)
        expect(String(r.b) === '9007199254740993', `int8 ${r.b}`)
        expect(r.c === 7, `int2 ${r.c}`)
        expect(r.e === true, `bool ${r.e}`)
        expect(JSON.stringify(r.g) === '[1,2,3]', `int4[] ${JSON.stringify(r.g)}`)
        expect(r.h === 'h\u00e9llo', `text ${r.h}`)
        expect(r.i === null, `null ${r.i}`)
      }
    })
  },

  async pipeline(args) {
    // The query queue: every query is issued before any reply is awaited; with `pipeline`
    // the client also writes them all before reading.
    for (const pipelined of [false, true]) {
      await withClients(
        args,
        1,
        async (c) => {
          const table = pipelined ? 'pl_wire' : 'pl_queue'
          await c.query(`CREATE TABLE ${table} (id int PRIMARY KEY)`)
          const inserts = []
          for (let i = 0; i < 300; i++) inserts.push(c.query(`INSERT INTO ${table} VALUES ($1)`, [i]))
          const echoes = []
          for (let i = 0; i < 100; i++) echoes.push(c.query('SELECT $1::int * 2 AS v', [i]))
          const total = c.query(`SELECT count(*)::int AS n, sum(id)::int AS s FROM ${table}`)
          await Promise.all(inserts)
          const got = await Promise.all(echoes)
          got.forEach((res, i) => expect(res.rows[0].v === i * 2, `echo ${i}: ${res.rows[0].v}`))
          const t = (await total).rows[0]
          expect(t.n === 300 && t.s === 44850, `pipelined=${pipelined}: count/sum ${t.n}/${t.s}`)
        },
        { pipeline: pipelined },
      )
    }
  },

  async copy(args) {
    const lines = []
    for (let i = 1; i <= COPY_ROWS; i++) lines.push(`${i}\trow ${i} \\\\ caf\u00e9 ${(i * 7919) % 10007}\n`)
    const data = Buffer.from(lines.join(''), 'utf8')
    const want = crypto.createHash('sha256').update(data).digest('hex')
    await withClients(args, 1, async (c) => {
      await c.query('CREATE TABLE cp (id int PRIMARY KEY, t text)')
      const sink = c.query(copyFrom('COPY cp FROM STDIN'))
      await streamPipeline(Readable.from(chunks(data, 65536)), sink)
      expect(sink.rowCount === COPY_ROWS, `COPY FROM copied ${sink.rowCount}`)
      const h = crypto.createHash('sha256')
      const source = c.query(copyTo('COPY (SELECT * FROM cp ORDER BY id) TO STDOUT'))
      for await (const chunk of source) h.update(chunk)
      expect(h.digest('hex') === want, "COPY TO bytes differ from COPY FROM's")
    })
  },

  async large_result(args) {
    await withClients(args, 1, async (c) => {
      const res = await c.query('SELECT i, repeat(chr(65 + i % 26), $1) AS t FROM generate_series(1, $2) i', [
        LARGE_WIDTH,
        LARGE_ROWS,
      ])
      expect(res.rows.length === LARGE_ROWS, `${res.rows.length} rows`)
      for (const { i, t } of res.rows) {
        if (t !== String.fromCharCode(65 + (i % 26)).repeat(LARGE_WIDTH)) throw new CheckFailed(`row ${i} differs`)
      }
      expect((await one(c, 'SELECT 1 AS v')) === 1, 'unusable after the large result')
    })
  },

  async cancel(args) {
    const marker = `compat_cancel_node_${crypto.randomUUID().replace(/-/g, '')}`
    await withClients(args, 2, async (c, watcher) => {
      const q = new pg.Query(`SELECT pg_sleep(60) /* ${marker} */`)
      const outcome = new Promise((resolve) => {
        q.on('error', (e) => resolve(e))
        q.on('end', () => resolve(null))
      })
      c.query(q)
      await waitRunning(watcher, marker)
      // The documented way: an unconnected Client sends the CancelRequest on a connection of
      // its own.
      new pg.Client(clientConfig(args)).cancel(c, q)
      const err = await outcome
      expect(err !== null, 'pg_sleep(60) finished: the cancel never arrived')
      expect(err.code === '57014', `SQLSTATE ${err.code}: ${err.message}`)
      expect((await one(c, 'SELECT 1 AS v')) === 1, 'unusable after cancel')
    })
  },

  async sqlstates(args) {
    await withClients(args, 1, async (c) => {
      await c.query('CREATE TABLE uq (id int PRIMARY KEY)')
      await c.query('INSERT INTO uq VALUES (1)')
      const cases = [
        ['INSERT INTO uq VALUES (1)', '23505'],
        ['SELECT 1 / 0', '22012'],
        ['SELECT * FROM no_such_table', '42P01'],
      ]
      for (const [sql, code] of cases) {
        // Without parameters node-postgres uses the simple protocol, with them the extended one.
        for (const values of [undefined, []]) {
          const err = await c.query(sql, values).then(
            () => null,
            (e) => e,
          )
          expect(err !== null, `${sql}: no error`)
          expect(err.code === code, `${sql}: SQLSTATE ${err.code}, wanted ${code}`)
          expect((await one(c, 'SELECT 1 AS v')) === 1, `unusable after ${code}`)
        }
      }
    })
  },

  async rollback_after_error(args) {
    await withClients(args, 1, async (c) => {
      await c.query('CREATE TABLE rb (id int PRIMARY KEY)')
      await c.query('BEGIN')
      await c.query('INSERT INTO rb VALUES (1)')
      const e1 = await c.query('SELECT 1 / 0').then(() => null, (e) => e)
      expect(e1 && e1.code === '22012', `1/0 gave ${e1 && e1.code}`)
      const e2 = await c.query('SELECT 1').then(() => null, (e) => e)
      expect(e2 && e2.code === '25P02', `in an aborted transaction: ${e2 && e2.code}`)
      await c.query('ROLLBACK')
      expect((await one(c, 'SELECT count(*)::int AS n FROM rb')) === 0, 'rolled-back row visible')
      await c.query('INSERT INTO rb VALUES (1)')
    })
  },

  async set_isolation(args) {
    let fallback
    await withClients(args, 2, async (a, b) => {
      fallback = await one(b, 'SHOW work_mem')
      expect(fallback !== '7777kB', 'work_mem already 7777kB')
      await a.query("SET work_mem = '7777kB'")
      await a.query("SET application_name = 'compat_a'")
      for (let i = 0; i < 5; i++) {
        expect((await one(a, 'SHOW work_mem')) === '7777kB', `round ${i}: a lost its SET`)
        expect((await one(b, 'SHOW work_mem')) === fallback, `round ${i}: b sees a's SET`)
        expect((await one(b, 'SHOW application_name')) !== 'compat_a', `round ${i}: b sees a's name`)
      }
    })
    await withClients(args, 1, async (c) => {
      expect((await one(c, 'SHOW work_mem')) === fallback, "a later client sees a's SET")
      expect((await one(c, 'SHOW application_name')) !== 'compat_a', "a later client sees a's name")
    })
  },

  async listen_notify(args) {
    await withClients(args, 2, async (listener, sender) => {
      const payloads = []
      const both = new Promise((resolve) => {
        listener.on('notification', (n) => {
          payloads.push(n.payload)
          if (payloads.length === 2) resolve()
        })
      })
      await listener.query('LISTEN compat_chan')
      await sender.query("NOTIFY compat_chan, 'hello'")
      await sender.query("SELECT pg_notify('compat_chan', 'second')")
      await withTimeout(both, 30000, `notifications so far: ${JSON.stringify(payloads)}`)
      expect(JSON.stringify(payloads) === '["hello","second"]', `notifications ${JSON.stringify(payloads)}`)
    })
  },
}

function* chunks(buf, size) {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size)
}

async function withTimeout(promise, ms, what) {
  let timer
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}

// Waits (up to 30 s) until the query carrying `marker` is active upstream, so the cancel is
// sent while it runs, not before it started.
async function waitRunning(watcher, marker) {
  for (let i = 0; i < 300; i++) {
    const n = await one(
      watcher,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active'" +
        ' AND datname = current_database() AND query LIKE $1',
      [`%${marker}%`],
    )
    if (n >= 1) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new CheckFailed(`query ${marker} never seen running`)
}

async function main() {
  const args = options()
  const todo = ALL_CHECKS.filter((c) => !args.skip.includes(c) && (args.only.length === 0 || args.only.includes(c)))
  let failures = 0
  for (const name of todo) {
    const started = process.hrtime.bigint()
    const took = () => `${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(2)}s`
    try {
      await withTimeout(checks[name](args), 120000, name)
      console.log(`ok   ${name} (${took()})`)
    } catch (e) {
      failures++
      const detail = e instanceof CheckFailed ? e.message : `${e.code ? e.code + ' ' : ''}${e.stack}`
      console.log(`FAIL ${name} (${took()}): ${String(detail).replace(/\n/g, ' | ')}`)
    }
  }
  const skipped = args.skip.length ? ` (${[...args.skip].sort().join(', ')})` : ''
  console.log(`${DRIVER}: ${todo.length - failures} passed, ${failures} failed, ${args.skip.length} skipped${skipped}`)
  if (todo.length === 0) {
    console.log(`${DRIVER}: no check ran`)
    process.exit(2)
  }
  process.exit(failures ? 1 : 0)
}

main().catch((e) => {
  console.error(e)
  process.exit(2)
})
