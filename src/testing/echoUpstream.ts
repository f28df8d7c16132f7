/**
 * The upstream createTestGatehouse() starts when the caller has none: every request is answered 200 with what
 * arrived, so a test can see what Gatehouse forwarded (the Bearer token, the rewritten path, the headers).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** The JSON body of every echo answer. */
export interface EchoResponse {
  method: string;
  /** the request target as the upstream received it: `/api/orders?x=1` arrives as `/orders?x=1` */
  url: string;
  headers: http.IncomingHttpHeaders;
  /** the request body as UTF-8 text ('' when none) */
  body: string;
}

export interface EchoUpstream {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  close(): Promise<void>;
}

export async function startEchoUpstream(): Promise<EchoUpstream> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const echo: EchoResponse = {
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      const text = JSON.stringify(echo);
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
