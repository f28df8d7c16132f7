/**
 * A real upstream API for proxy tests: node:http on 127.0.0.1:<ephemeral>, recording every request.
 *
 * Routes (matched on the path, any method):
 * - `/sse?events=N`        text/event-stream: N (default 3) `data:` events 100 ms apart, then ends
 * - `/set-cookie`          200 JSON with `Set-Cookie: gatehouse=evil; Path=/` and `Set-Cookie: __Host-Http-gatehouse=evil; Path=/; Secure`
 * - `/set-cookie-app`      200 JSON with the upstream's own `app-pref=dark; Path=/` and two named like Gatehouse's
 * - any path, with a bearer listed in `rejectedTokens`, and `/refuse-every-token`: 401
 *   `WWW-Authenticate: Bearer error="invalid_token"` (a token revoked early; an API that locked the user out)
 * - `/slow?ms=N`           the echo, after N ms (default 1000)
 * - `/status/:code`        that status with a JSON body `{status: code}` (no body for 204/304)
 * - `/big-upload`          streams the request body, counting bytes: 200 `{bytes: n}` (the body is not recorded)
 * - anything else          200 echo `{method, path, query, headers, body, sub}`
 *
 * `sub` is the `sub` claim when the Bearer token is a JWT, else null (oidc-provider access tokens are opaque);
 * `headers.authorization` is echoed as received.
 *
 * WebSocket upgrades (recorded in `upgrades`, open sockets in `sockets`, the close codes it received in `closes`):
 * - `/ws/refuse`           403 JSON with a `Set-Cookie`, no upgrade
 * - `/ws/silent`           never answers the handshake
 * - `/ws/ticker?ms=N`      after the handshake, a text message `tick <n>` every N ms (default 50)
 * - anything else          101 (with `Set-Cookie: gatehouse=evil` in it), then every message echoed as it came
 *                          (text as text, binary as binary); the first message sent is `hello <authorization>`
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface RecordedRequest {
  method: string;
  /** raw request target, e.g. `/things?x=1` */
  url: string;
  headers: http.IncomingHttpHeaders;
  /** raw header list as received (shows duplicates, e.g. two Authorization headers) */
  rawHeaders: string[];
  /** body as UTF-8 text ('' when none; for /big-upload always '') */
  body: string;
  /** body size in bytes */
  bodyBytes: number;
}

export interface EchoResponse {
  /** `aud` of a JWT bearer (unverified), else null */
  aud: string | string[] | null;
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  headers: http.IncomingHttpHeaders;
  body: string;
  sub: string | null;
}

export interface TestUpstream {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly server: http.Server;
  /** every request so far, in arrival order (recorded once the body has been read) */
  readonly requests: RecordedRequest[];
  /** the last recorded request (throws if none) */
  last(): RecordedRequest;
  /** forget recorded requests */
  reset(): void;
  /** Access tokens this API refuses (401 invalid_token), as an API does with a token revoked early. */
  readonly rejectedTokens: Set<string>;
  /** Every WebSocket upgrade request that reached it, in arrival order. */
  readonly upgrades: Array<{ url: string; headers: http.IncomingHttpHeaders; rawHeaders: string[] }>;
  /** The WebSockets open now. */
  readonly sockets: Set<WebSocket>;
  /** The close code of every WebSocket closed so far (1006: cut without a close frame). */
  readonly closes: number[];
  close(): Promise<void>;
}

/** A claim of a JWT bearer (payload decoded, signature NOT verified), or null. */
function claimOfBearer(authorization: string | undefined, claim: string): unknown {
  const token = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')?.[1];
  const payload = token?.split('.')[1];
  if (!payload || token?.split('.').length !== 3) return null;
  try {
    return (JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>)[claim] ?? null;
  } catch {
    return null;
  }
}

/** `sub` of a JWT (payload decoded, signature NOT verified), or null if the token is not a JWT. */
export function subFromBearer(authorization: string | undefined): string | null {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
  const token = m?.[1];
  if (!token) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return null;
  try {
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as { sub?: unknown };
    return typeof payload.sub === 'string' ? payload.sub : null;
  } catch {
    return null;
  }
}

function queryOf(url: URL): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of url.searchParams) {
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else out[k] = Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, extraHeaders: http.OutgoingHttpHeaders = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...extraHeaders,
  });
  res.end(text);
}

export async function startUpstream(): Promise<TestUpstream> {
  const requests: RecordedRequest[] = [];
  const rejectedTokens = new Set<string>();
  const pendingTimers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      pendingTimers.delete(t);
      fn();
    }, ms);
    pendingTimers.add(t);
  };

  const server = http.createServer((req, res) => {
    const method = req.method ?? 'GET';
    const rawUrl = req.url ?? '/';
    // parse leniently: the target may be odd on purpose (path-traversal tests) and must still be recorded
    let parsed: URL;
    try {
      parsed = new URL(rawUrl, 'http://upstream.invalid');
    } catch {
      parsed = new URL('http://upstream.invalid/');
    }
    const path = parsed.pathname;

    if (path === '/big-upload') {
      let bytes = 0;
      req.on('data', (c: Buffer) => {
        bytes += c.length;
      });
      req.on('end', () => {
        requests.push({ method, url: rawUrl, headers: req.headers, rawHeaders: req.rawHeaders, body: '', bodyBytes: bytes });
        sendJson(res, 200, { bytes });
      });
      return;
    }

    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const buf = Buffer.concat(chunks);
      const body = buf.toString('utf8');
      requests.push({ method, url: rawUrl, headers: req.headers, rawHeaders: req.rawHeaders, body, bodyBytes: buf.length });
      const echo: EchoResponse = {
        method,
        path,
        query: queryOf(parsed),
        headers: req.headers,
        body,
        sub: subFromBearer(req.headers.authorization),
        aud: claimOfBearer(req.headers.authorization, 'aud') as EchoResponse['aud'],
      };

      const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
      if ((bearer !== undefined && rejectedTokens.has(bearer)) || path === '/refuse-every-token') {
        sendJson(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer realm="api", error="invalid_token"' });
        return;
      }

      if (path === '/sse') {
        const events = Number(parsed.searchParams.get('events') ?? '3');
        res.writeHead(200, {
          'content-type': 'text/event-stream',
          'cache-control': 'no-cache',
          connection: 'keep-alive',
        });
        res.flushHeaders();
        let n = 0;
        const tick = () => {
          if (res.destroyed) return;
          n++;
          res.write(`data: ${JSON.stringify({ n })}\n\n`);
          if (n < events) later(100, tick);
          else res.end();
        };
        tick();
        return;
      }

      if (path === '/set-cookie') {
        sendJson(res, 200, echo, {
          'set-cookie': ['gatehouse=evil; Path=/', '__Host-Http-gatehouse=evil; Path=/; Secure'],
        });
        return;
      }

      if (path === '/set-cookie-app') {
        sendJson(res, 200, echo, {
          'set-cookie': ['app-pref=dark; Path=/', 'gatehouse=evil; Path=/', 'gatehouse-tx-0123456789abcdef=evil; Path=/'],
        });
        return;
      }

      if (path === '/slow') {
        const ms = Number(parsed.searchParams.get('ms') ?? '1000');
        later(Number.isFinite(ms) && ms >= 0 ? ms : 1000, () => {
          if (!res.destroyed) sendJson(res, 200, echo);
        });
        return;
      }

      const status = /^\/status\/(\d{3})$/.exec(path)?.[1];
      if (status) {
        const code = Number(status);
        if (code === 204 || code === 304) {
          res.writeHead(code);
          res.end();
        } else {
          sendJson(res, code, { status: code });
        }
        return;
      }

      sendJson(res, 200, echo);
    });
  });

  const upgrades: TestUpstream['upgrades'] = [];
  const sockets = new Set<WebSocket>();
  const closes: number[] = [];
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });
  wss.on('headers', (headers) => headers.push('Set-Cookie: gatehouse=evil; Path=/'));
  const rawSockets = new Set<Socket>();
  server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    rawSockets.add(socket);
    socket.on('close', () => rawSockets.delete(socket));
    const url = req.url ?? '/';
    upgrades.push({ url, headers: req.headers, rawHeaders: req.rawHeaders });
    const path = new URL(url, 'http://upstream.invalid').pathname;
    if (path.endsWith('/ws/refuse')) {
      const body = JSON.stringify({ error: 'refused' });
      socket.end(
        `HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nSet-Cookie: gatehouse=evil; Path=/\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    if (path.endsWith('/ws/silent')) return;
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.on('close', (code) => {
        sockets.delete(ws);
        closes.push(code);
      });
      ws.on('error', () => undefined);
      if (path.endsWith('/ws/ticker')) {
        const ms = Number(new URL(url, 'http://upstream.invalid').searchParams.get('ms') ?? '50');
        let n = 0;
        const timer = setInterval(() => ws.send(`tick ${++n}`), ms);
        ws.on('close', () => clearInterval(timer));
        return;
      }
      ws.send(`hello ${req.headers.authorization ?? ''}`);
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });

  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    server,
    requests,
    last: () => {
      const r = requests[requests.length - 1];
      if (!r) throw new Error('the upstream has not received any request');
      return r;
    },
    reset: () => {
      requests.length = 0;
    },
    rejectedTokens,
    upgrades,
    sockets,
    closes,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of pendingTimers) clearTimeout(t);
        pendingTimers.clear();
        for (const ws of sockets) ws.terminate();
        for (const s of rawSockets) s.destroy();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
