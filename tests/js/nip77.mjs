// Runs a NIP-77 reconciliation with nostr-tools against a relay.
// Usage: node nip77.mjs <ws-url> <filter-json>   (local items on stdin as
// JSON [[created_at, "hex id"], ...]); prints {"have": [...], "need": [...]}.
import WebSocket from 'ws'
import { Relay, useWebSocketImplementation } from 'nostr-tools/relay'
import { nip77 } from 'nostr-tools'

const { NegentropyStorageVector, NegentropySync } = nip77

useWebSocketImplementation(WebSocket)

const [url, filterJson] = process.argv.slice(2)
let input = ''
for await (const chunk of process.stdin) input += chunk
const storage = new NegentropyStorageVector()
for (const [ts, id] of JSON.parse(input || '[]')) storage.insert(ts, id)
storage.seal()

const relay = await Relay.connect(url)
const have = new Set()
const need = new Set()
await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('timed out')), 10000)
  const sync = new NegentropySync(relay, storage, JSON.parse(filterJson), {
    onhave: (id) => have.add(id),
    onneed: (id) => need.add(id),
    onclose: (err) => {
      clearTimeout(timer)
      err ? reject(new Error(err)) : resolve()
    },
  })
  // nostr-tools ends a sync on NEG-ERR as if it had succeeded: catch it.
  const handle = sync.subscription.oncustom
  sync.subscription.oncustom = (data) => {
    if (data[0] === 'NEG-ERR') {
      clearTimeout(timer)
      reject(new Error(`NEG-ERR: ${data[2]}`))
      return
    }
    handle(data)
  }
  sync.start()
})
console.log(JSON.stringify({ have: [...have].sort(), need: [...need].sort() }))
relay.close()
process.exit(0)
