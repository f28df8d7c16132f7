/**
 * /api computes the browser's address without Express, so it must agree with what Express' `req.ip`
 * gives under `trust proxy` = the same hop count (which it used before, and which /auth still uses).
 */
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { clientAddress } from '../../src/http/clientAddress';

const HEADERS = [
  undefined,
  '',
  '203.0.113.7',
  '203.0.113.7, 198.51.100.2',
  '203.0.113.7,198.51.100.2,192.0.2.9',
  ' 203.0.113.7 ,  198.51.100.2 ',
  '203.0.113.7,,198.51.100.2',
  ', ,203.0.113.7',
  'unknown, 198.51.100.2',
  '2001:db8::1, 203.0.113.7',
  '203.0.113.7\t, 198.51.100.2',
  ',',
];

describe('clientAddress (X-Forwarded-For trusted only as far as the configured hops)', () => {
  const servers: http.Server[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  /** Both answers for one request: Express' req.ip and clientAddress on the same request. */
  async function both(hops: number, xff: string | undefined): Promise<{ express: unknown; ours: unknown }> {
    const app = express();
    app.set('trust proxy', hops > 0 ? hops : false);
    app.get('/', (req, res) => {
      res.json({ express: req.ip, ours: clientAddress(req as IncomingMessage, hops) });
    });
    const server = http.createServer(app);
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const headers: Record<string, string> = xff === undefined ? {} : { 'x-forwarded-for': xff };
    const r = await fetch(`http://127.0.0.1:${port}/`, { headers });
    const body = (await r.json()) as { express: unknown; ours: unknown };
    server.close();
    return body;
  }

  for (const hops of [0, 1, 2, 3]) {
    it.each(HEADERS.map((h) => [h]))(`${hops} hop(s), X-Forwarded-For %j: the address Express would give`, async (xff) => {
      const { express: expected, ours } = await both(hops, xff);
      expect(ours).toBe(expected);
    });
  }

  it('never takes an address from the header when no hop is trusted', async () => {
    const { ours } = await both(0, '203.0.113.7');
    expect(ours).toBe('127.0.0.1');
  });

  it('takes the rightmost entry with one trusted hop (a browser cannot choose it)', async () => {
    const { ours } = await both(1, 'spoofed, 203.0.113.7');
    expect(ours).toBe('203.0.113.7');
  });
});
