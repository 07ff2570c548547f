// json-server (a third-party REST API from npm, pinned in package-lock.json) on a free loopback port.
//
//   node json_server.js --db db.json --port-file F [--exit-with-parent PID]
//
// Serves every collection of db.json the way json-server does (POST /showings -> 201 with an id that
// is the largest id plus one, GET /showings?q=text&_page=&_limit=, DELETE /showings/:id -> 200, 404 when
// gone), persisting each write to db.json. It writes its port to F once it listens, and exits when
// process PID is gone, so a killed test run leaves no server behind.
'use strict'

const fs = require('fs')
const jsonServer = require('json-server')

function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback
}

const db = option('--db')
const portFile = option('--port-file')
const parent = Number(option('--exit-with-parent', '0'))
if (!db || !portFile) {
  console.error('usage: node json_server.js --db db.json --port-file F [--exit-with-parent PID]')
  process.exit(2)
}

const server = jsonServer.create()
server.use(jsonServer.defaults({ logger: false, noCors: true }))
server.use(jsonServer.router(db))
const listener = server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(listener.address().port))
  fs.renameSync(portFile + '.tmp', portFile)
})
if (parent) {
  setInterval(() => { if (process.ppid !== parent) process.exit(0) }, 1000).unref()
}
process.on('SIGTERM', () => process.exit(0))
