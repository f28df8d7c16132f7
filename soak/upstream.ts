/**
 * The soak's upstream API (a child process): checks the bearer of every request itself, locally, against the
 * IdP's keys (RS256 signature, issuer, audience, `exp` with no tolerance), as a resource server does, so it
 * costs no call to the IdP. A refused token is answered 401 `invalid_token` (RFC 6750 §3.1), which the gateway
 * answers by refreshing once and replaying; every refusal is counted, and the soak's target is none.
 *
 * Faults, on the orchestrator's call: `down` (the listener closed and open connections cut: the gateway
 * answers 502) and `slow` (every answer waits, past the gateway's upstream timeout: 504).
 */
import http from 'node:http';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import { rpcServer, type UpstreamFault } from './protocol';

interface Options {
  port: number;
  issuer: string;
  audience: string;
  jwks: JSONWebKeySet;
}
const o = JSON.parse(process.argv[2] ?? '{}') as Options;
const keys = createLocalJWKSet(o.jwks);

let fault: UpstreamFault = { kind: 'none' };
const counts = { requests: 0, accepted: 0, refused: {} as Record<string, number>, noBearer: 0, cut: 0 };

async function check(authorization: string | undefined): Promise<{ sub: string } | { error: string }> {
  const m = /^Bearer (\S+)$/.exec(authorization ?? '');
  if (!m) return { error: 'no bearer' };
  try {
    const { payload } = await jwtVerify(m[1]!, keys, { issuer: o.issuer, audience: o.audience, algorithms: ['RS256'], clockTolerance: 0 });
    return { sub: String(payload.sub) };
  } catch (err) {
    return { error: (err as { code?: string }).code ?? 'invalid' };
  }
}

const server = http.createServer((req, res) => {
  counts.requests++;
  req.resume();
  req.once('end', () => {
    void (async () => {
      const f = fault;
      if (f.kind === 'slow') await sleep(f.ms);
      if (res.destroyed) {
        counts.cut++;
        return;
      }
      const who = await check(req.headers.authorization);
      if ('error' in who) {
        if (who.error === 'no bearer') counts.noBearer++;
        counts.refused[who.error] = (counts.refused[who.error] ?? 0) + 1;
        const body = JSON.stringify({ error: 'invalid_token' });
        res.writeHead(401, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'www-authenticate': 'Bearer error="invalid_token"',
        });
        res.end(body);
        return;
      }
      counts.accepted++;
      const body = JSON.stringify({ ok: true, sub: who.sub, path: req.url });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(body);
    })();
  });
});
server.keepAliveTimeout = 120_000;
const sockets = new Set<net.Socket>();
server.on('connection', (s) => {
  sockets.add(s);
  s.once('close', () => sockets.delete(s));
});
const listen = () => new Promise<void>((resolve) => server.listen(o.port, '127.0.0.1', resolve));

rpcServer({
  fault: async (next: UpstreamFault) => {
    const was = fault;
    fault = next;
    if (next.kind === 'down' && was.kind !== 'down') {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    } else if (was.kind === 'down' && next.kind !== 'down') {
      await listen();
    }
  },
  stats: () => counts,
});

process.on('disconnect', () => process.exit(0));
void listen().then(() => process.send?.({ ready: o.port }));
