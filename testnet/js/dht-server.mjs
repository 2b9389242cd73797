// A js-libp2p Kademlia DHT server, run as a new user would run one, for
// crates/rdht-net/tests/js_kad.rs: a libp2p implementation rdht did not write must accept
// rdht's provider keys (specs/swarm.md §6.1).
//
// Usage: node dht-server.mjs <kad protocol, e.g. /rdht/kad/2.0.0>
// Listens on 127.0.0.1, a port the OS picks, over TCP + noise + yamux (what js-libp2p and
// rdht's public swarm share), with @libp2p/kad-dht in server mode. Prints to stdout, one
// line each:
//   listening <multiaddr>/p2p/<peer id>       once, when ready
//   provider <multihash hex> <peer id>        each provider record it stores
// and exits when its stdin closes (so it dies with the test that started it).
// Diagnostics go to stderr (DEBUG=libp2p:kad-dht* for the DHT's own log).

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { MemoryDatastore } from 'datastore-core'
import { createLibp2p } from 'libp2p'
import { base32 } from 'multiformats/bases/base32'

const protocol = process.argv[2]
if (protocol == null || !protocol.startsWith('/')) {
  console.error('usage: node dht-server.mjs <kademlia protocol id>')
  process.exit(2)
}

// kad-dht keeps a provider record at /dht/provider/<base32 of the key's multihash>/<peer
// id>, written only once it decoded the key of an ADD_PROVIDER as a CID and checked the
// provider. Reporting those writes shows exactly what it stored.
const datastore = new MemoryDatastore()
const put = datastore.put.bind(datastore)
datastore.put = async (key, value, options) => {
  const done = await put(key, value, options)
  const parts = key.toString().split('/')
  if (parts.length === 5 && parts[1] === 'dht' && parts[2] === 'provider') {
    const multihash = base32.baseDecode(parts[3].toLowerCase())
    console.log(`provider ${Buffer.from(multihash).toString('hex')} ${parts[4]}`)
  }
  return done
}

const node = await createLibp2p({
  datastore,
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol,
      clientMode: false,
      // The default drops loopback and private addresses from answers.
      peerInfoMapper: passthroughMapper
    })
  }
})

const addr = node.getMultiaddrs().find((a) => a.toString().includes('/tcp/'))
if (addr == null) {
  console.error('not listening on TCP')
  process.exit(1)
}
console.log(`listening ${addr.toString()}`)

process.stdin.resume()
process.stdin.on('end', async () => {
  await node.stop()
  process.exit(0)
})
