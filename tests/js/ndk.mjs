// Runs a NIP-77 sync with NDK (@nostr-dev-kit/ndk 3 + @nostr-dev-kit/sync 1)
// against a relay.
// Usage: node ndk.mjs <ws-url> <filter-json> [--no-fetch]
//   <filter-json> is one filter object or an array of filters.
//   Stdin: the events NDK's cache holds, a JSON array of full signed events.
// Prints one JSON object on stdout:
//   {"negentropy": true, "need": [ids], "have": [ids], "fetched": [ids],
//    "cached": <events in the cache after the sync>,
//    "neg_open": [<the filters element of each NEG-OPEN sent>],
//    "rounds": <NEG-MSG frames received>, "reqs": [<filters of each REQ sent>]}
// (ids sorted). `fetched` holds the events NDK fetched by id after the
// reconciliation (none with --no-fetch). Exits non-zero with a message on
// stderr if the sync errored, timed out or fell back to a plain REQ.
import WebSocket from 'ws'
import NDK, { NDKEvent } from '@nostr-dev-kit/ndk'
import { NDKSync } from '@nostr-dev-kit/sync'
import { matchFilter } from 'nostr-tools/filter'

// Only this script writes to stdout: a library's console.log goes to stderr.
console.log = console.error

// NDK opens sockets with the global WebSocket (absent on Node 20): use ws
// everywhere so every Node version runs the same client.
globalThis.WebSocket = WebSocket

const fail = (msg) => {
  process.stderr.write(`ndk.mjs: ${msg}\n`)
  process.exit(1)
}
const watchdog = setTimeout(() => fail('timed out'), 30000)

const [url, filterJson, ...flags] = process.argv.slice(2)
if (!url || !filterJson) fail('usage: node ndk.mjs <ws-url> <filter-json> [--no-fetch]')
const filters = JSON.parse(filterJson)
const autoFetch = !flags.includes('--no-fetch')

let input = ''
for await (const chunk of process.stdin) input += chunk

// NDK's sync needs a cache adapter (it builds its negentropy storage from a
// cache query); none on npm works in Node, so a small in-memory one.
class MemoryCacheAdapter {
  locking = true
  ready = true
  events = new Map() // id -> raw event
  relayStatus = new Map()

  query(subscription) {
    const out = []
    for (const raw of this.events.values()) {
      if (subscription.filters.some((f) => matchFilter(f, raw))) {
        out.push(new NDKEvent(subscription.ndk, raw))
      }
    }
    return out
  }

  async setEvent(event) {
    this.events.set(event.id, event.rawEvent())
  }

  getRelayStatus(relayUrl) {
    return this.relayStatus.get(relayUrl)
  }

  updateRelayStatus(relayUrl, info) {
    const old = this.relayStatus.get(relayUrl) || {}
    this.relayStatus.set(relayUrl, {
      ...old,
      ...info,
      metadata: { ...old.metadata, ...info.metadata },
    })
  }
}

const cache = new MemoryCacheAdapter()
for (const raw of JSON.parse(input || '[]')) cache.events.set(raw.id, raw)

// The wire, as NDK sees it.
const wire = { negOpen: [], negMsgIn: 0, negErr: [], notices: [], reqs: [], connected: [] }
const netDebug = (msg, relay, direction) => {
  if (!direction) {
    if (msg === 'connected') wire.connected.push(relay.url)
    return
  }
  let data
  try {
    data = JSON.parse(msg)
  } catch {
    return
  }
  if (!Array.isArray(data)) return
  if (direction === 'send') {
    if (data[0] === 'NEG-OPEN') wire.negOpen.push(data[2])
    if (data[0] === 'REQ') wire.reqs.push(data.slice(2))
  } else {
    if (data[0] === 'NEG-MSG') wire.negMsgIn++
    if (data[0] === 'NEG-ERR') wire.negErr.push(data[2])
    if (data[0] === 'NOTICE') wire.notices.push(data[1])
  }
}

const ndk = new NDK({
  explicitRelayUrls: [url],
  cacheAdapter: cache,
  netDebug,
  // No relays but the one given: no outbox pool (public relays), no
  // user relay lists.
  enableOutboxModel: false,
  autoConnectUserRelays: false,
})
await ndk.connect(10000)
const relays = [...ndk.pool.relays.values()]
if (relays.length !== 1) fail(`expected one relay in the pool, got ${relays.length}`)
const [relay] = relays
if (!relay.connected) fail(`could not connect to ${url}`)

const errors = []
const sync = new NDKSync(ndk)
const result = await sync.sync(filters, {
  autoFetch,
  timeout: 15000,
  onRelayError: (r, err) => errors.push(`${r.url}: ${err.message}`),
})
const capability = await sync.getRelayCapability(relay.url)
clearTimeout(watchdog)

const problems = [...errors]
for (const other of wire.connected) {
  if (other !== relay.url) problems.push(`connected to another relay: ${other}`)
}
if (!capability?.supportsNegentropy) {
  problems.push(
    `NDK marked ${relay.url} as not supporting NIP-77` +
      (capability?.lastError ? ` (${capability.lastError})` : ''),
  )
}
if (wire.negOpen.length === 0) problems.push('no NEG-OPEN was sent')
if (wire.negMsgIn === 0) problems.push('no NEG-MSG was received')
for (const err of wire.negErr) problems.push(`NEG-ERR: ${err}`)
// Fetching needed events by id is part of the sync; any other REQ is the
// fallback to a plain query.
for (const req of wire.reqs) {
  if (!req.every((f) => Array.isArray(f.ids) && Object.keys(f).length === 1)) {
    problems.push(`fell back to REQ: ${JSON.stringify(req)}`)
  }
}
if (problems.length > 0) {
  fail(`NIP-77 sync failed:\n  ${problems.join('\n  ')}\n  notices: ${JSON.stringify(wire.notices)}`)
}

const out = {
  negentropy: true,
  need: [...result.need].sort(),
  have: [...result.have].sort(),
  fetched: [...new Set(result.events.map((e) => e.id))].sort(),
  cached: cache.events.size,
  neg_open: wire.negOpen,
  rounds: wire.negMsgIn,
  reqs: wire.reqs,
}
process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0))
