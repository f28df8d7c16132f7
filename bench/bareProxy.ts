/**
 * The leanest Node proxy (a child process of the bench, the baseline the gateway is held to): node:http
 * piping each request to the upstream over a keep-alive agent with one header added, and the answer back.
 * No routing, no header policy, no session: what any Node proxy costs at least.
 *
 *   node bareProxy.js <upstream port>
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const upstreamPort = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: 'Bearer bench-access-token' };
  const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url, headers, agent }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(up);
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => process.send?.({ ready: (server.address() as AddressInfo).port }));
process.on('disconnect', () => process.exit(0));
