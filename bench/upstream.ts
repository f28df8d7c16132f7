/**
 * The fast upstream (a child process of the bench): answers every request at once with a small JSON body,
 * like a cached API read. `x-saw-bearer` and `x-saw-dpop` tell the bench's sanity check whether a Bearer token,
 * or a DPoP token with its proof, arrived.
 *
 * The same server takes WebSocket upgrades (`ws`, no compression): `/echo` sends every message back as it
 * came (text as text, binary as binary); `/bearer` sends one message, `saw-bearer:1` or `saw-bearer:0`, and
 * closes (the sanity check of the WebSocket route).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

const BODY = JSON.stringify({
  items: [
    { id: 1, name: 'first' },
    { id: 2, name: 'second' },
  ],
  total: 2,
});

const server = http.createServer((req, res) => {
  // The body streams through every proxy: drain it before answering.
  req.resume();
  req.on('end', () => {
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(BODY),
      'cache-control': 'no-store',
      'x-saw-bearer': /^Bearer \S+$/.test(req.headers.authorization ?? '') ? '1' : '0',
      // A DPoP-bound token comes with its proof (RFC 9449 §7.1).
      'x-saw-dpop': /^DPoP \S+$/.test(req.headers.authorization ?? '') && typeof req.headers.dpop === 'string' ? '1' : '0',
    });
    res.end(BODY);
  });
});
// Longer than any pause between rounds: a proxy's pooled connection is never closed under it (no
// keep-alive race turning into a 502 that would be counted against the proxy).
server.keepAliveTimeout = 120_000;

const sockets = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });
sockets.on('connection', (ws, req) => {
  ws.on('error', () => ws.terminate());
  if (req.url === '/echo') {
    ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
  } else if (req.url === '/bearer') {
    ws.send(`saw-bearer:${/^Bearer \S+$/.test(req.headers.authorization ?? '') ? '1' : '0'}`, () => ws.close(1000));
  } else {
    ws.close(1008, 'unknown path');
  }
});

server.listen(0, '127.0.0.1', () => process.send?.({ ready: (server.address() as AddressInfo).port }));
process.on('disconnect', () => process.exit(0));
