// Aedes broker over WebSocket for the tests: node aedes.mjs <ws-port> [auth]
// With "auth": a username must be alice/alicepw (else CONNACK 4, bad user name or password).
// Always: subscribing to test/secret is refused (SUBACK 0x80), publishing to it is denied.
import { createServer } from 'node:http'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'

const port = Number(process.argv[2])
const auth = process.argv[3] === 'auth'
const aedes = await Aedes.createBroker()
aedes.authenticate = (client, user, pw, cb) => {
  if (!auth || (user === 'alice' && pw?.toString() === 'alicepw')) return cb(null, true)
  cb(Object.assign(new Error('auth'), { returnCode: 4 }), null)
}
aedes.authorizePublish = (c, p, cb) => cb(p.topic === 'test/secret' ? new Error('denied') : null)
aedes.authorizeSubscribe = (c, s, cb) => cb(null, s.topic === 'test/secret' ? null : s)
const server = createServer()
new WebSocketServer({ server, handleProtocols: (protocols) => protocols.has('mqtt') ? 'mqtt' : false })
  .on('connection', (sock, req) => aedes.handle(createWebSocketStream(sock), req))
server.listen(port, '127.0.0.1', () => console.log('aedes ready'))
