/**
 * The /api forwarder (src/api/forward.ts, http-proxy-middleware on node:http) against an upstream that misbehaves on
 * purpose: a base path, an answer before the request body was read, a browser that goes away, an
 * upstream that dies in the middle of its answer.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { loginAs } from '../support/login';
import { SPA, startStack, type Instance, type Stack } from '../support/stack';
import { issuedCookie } from '../support/security';
import { waitFor } from '../support/wait';

interface Seen {
  url: string;
  host: string | undefined;
  closedEarly: boolean;
}

describe('the /api forwarder against an upstream with a base path and odd behaviour', () => {
  let s: Stack;
  let gw: Instance;
  let upstream: http.Server;
  let cookie: string;
  const seen: Seen[] = [];

  beforeAll(async () => {
    upstream = http.createServer((req, res) => {
      const entry: Seen = { url: req.url ?? '', host: req.headers.host, closedEarly: false };
      seen.push(entry);
      res.on('close', () => {
        if (!res.writableFinished) entry.closedEarly = true;
      });
      const path = (req.url ?? '').split('?')[0];
      if (path === '/base/early') {
        // answers at once, before reading a large body
        res.writeHead(413, { 'content-type': 'application/json' }).end('{"error":"too_large"}');
        return;
      }
      if (path === '/base/hang') return; // never answers: only the browser going away ends it
      if (path === '/base/die') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
        res.write('only part of it');
        setTimeout(() => res.socket?.destroy(), 50);
        return;
      }
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ url: req.url })));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = (upstream.address() as AddressInfo).port;
    s = await startStack();
    gw = await s.addInstance({ upstream: `http://127.0.0.1:${port}/base/` });
    const cb = await loginAs(gw.agent(), s.idp, 'forward-user');
    cookie = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
  });
  afterAll(async () => {
    await s?.close();
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
  });

  /** A raw HTTP/1.1 exchange on its own socket (no client library in between). */
  function raw(request: string, body?: Buffer): Promise<{ head: string; socket: net.Socket; data: () => string }> {
    const url = new URL(gw.url);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(url.port), url.hostname, () => {
        socket.write(request);
        if (body) socket.write(body);
      });
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        if (text.includes('\r\n\r\n')) resolve({ head: text.split('\r\n\r\n')[0]!, socket, data: () => text });
      });
      socket.on('error', reject);
    });
  }
  const headers = () => `Host: ${new URL(gw.url).host}\r\nCookie: ${cookie}\r\nX-CSRF: 1\r\nSec-Fetch-Site: same-origin\r\n`;

  it('/api/<p>?<q> reaches <UPSTREAM base>/<p>?<q>, with the upstream’s own Host', async () => {
    const r = await gw.agent().get('/api/things/1?q=a%20b').set(SPA).set('Cookie', cookie).expect(200);
    expect(r.body).toEqual({ url: '/base/things/1?q=a%20b' });
    expect(seen.at(-1)!.host).toBe(`127.0.0.1:${(upstream.address() as AddressInfo).port}`);
    await gw.agent().get('/api').set(SPA).set('Cookie', cookie).expect(200, { url: '/base/' });
  });

  it('an upstream answer sent before the request body was read reaches the browser, and the connection goes on serving', async () => {
    const body = Buffer.alloc(2 * 1024 * 1024, 'x');
    const r = await raw(`POST /api/early HTTP/1.1\r\n${headers()}Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n`, body);
    expect(r.head).toMatch(/^HTTP\/1\.1 413 /);
    // The same connection serves the next request once the rest of the body has been drained.
    await sleep(300);
    const before = r.data().length;
    r.socket.write(`GET /api/next HTTP/1.1\r\n${headers()}\r\n`);
    await waitFor('the answer to the next request', () => r.data().slice(before).includes('/base/next'), 1000);
    expect(r.data().slice(before)).toMatch(/HTTP\/1\.1 200 [^]*\/base\/next/);
    r.socket.destroy();
  });

  it('a browser that goes away cancels its upstream request', async () => {
    const count = seen.length;
    const url = new URL(gw.url);
    const socket = net.connect(Number(url.port), url.hostname, () => socket.write(`GET /api/hang HTTP/1.1\r\n${headers()}\r\n`));
    await waitFor('the request to reach the upstream', () => seen.length !== count, 1000, 10);
    expect(seen.at(-1)!.url).toBe('/base/hang');
    socket.destroy();
    await waitFor('the upstream request to be cancelled', () => seen.at(-1)!.closedEarly, 1000, 10);
    expect(seen.at(-1)!.closedEarly).toBe(true);
  });

  it('an upstream that dies in the middle of its answer cuts the browser’s connection (no truncated body passed off as whole)', async () => {
    const r = await raw(`GET /api/die HTTP/1.1\r\n${headers()}\r\n`);
    expect(r.head).toMatch(/^HTTP\/1\.1 200 /);
    await new Promise<void>((resolve) => r.socket.on('close', () => resolve()));
    expect(r.data()).not.toMatch(/\r\n\r\n[^]{100}/); // fewer bytes than Content-Length said, then the cut
  });
});
