/**
 * Helpers for the tests that look at the wire (the test/e2e/security-*.test.ts files and the proxy tests): raw
 * HTTP requests (node:http and net sockets, which never normalise a path or fix a header), a recorder of every
 * response a gateway server wrote, Set-Cookie parsing, a type-aware Redis dump and the "no secret anywhere" search.
 */
import http from 'node:http';
import net from 'node:net';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestIdp } from './idp';
import { followIdp, type Agent, type Response } from './login';
import type { Stack } from './stack';
import type { TestUpstream } from './upstream';

// ---------- raw requests ----------

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: string;
}

/**
 * One request with node:http and no agent: the path goes on the request line exactly as given
 * (`/api/../admin` stays as it is) and the headers exactly as given.
 */
export function rawRequest(
  base: string,
  opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer },
): Promise<RawResponse> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers ?? {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export interface SocketResponse {
  /** 0 when the server closed the connection without answering */
  status: number;
  head: string;
  body: string;
}

/** Writes `bytes` on a fresh TCP connection and reads until the server closes it (or `timeoutMs`). */
export function rawSocket(port: number, bytes: Buffer | string, timeoutMs = 3000): Promise<SocketResponse> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    const done = () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = end < 0 ? text : text.slice(0, end);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: end < 0 ? '' : text.slice(end + 4) });
    };
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // a reset after the answer is fine; done() runs on close
    socket.on('close', done);
  });
}

// ---------- an upstream mounted under base paths ----------

type RequestListener = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/**
 * Makes the test upstream answer under each of `bases` as it does at its root, like an API mounted below a
 * prefix: `<base>/sse` is its event stream, `<base>/status/201` its 201, `<base>/big-upload` its byte
 * counter. What it records keeps the request target exactly as it arrived (`/orders-base/v2/sse`), so a test
 * still sees where the gateway sent each request; a target under none of `bases` reaches it unchanged.
 * Listeners added to its server later see the target as it arrived too.
 */
export function serveUnderBasePaths(upstream: TestUpstream, bases: readonly string[]): void {
  const server = upstream.server;
  const own = server.listeners('request') as RequestListener[];
  const longestFirst = [...bases].sort((a, b) => b.length - a.length);
  server.removeAllListeners('request');
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const target = req.url ?? '/';
    const base = longestFirst.find((b) => target.startsWith(`${b}/`));
    if (base !== undefined) req.url = target.slice(base.length);
    for (const listener of own) listener.call(server, req, res);
    if (base === undefined) return;
    req.url = target;
    // The upstream records a request once it has read its body, from a listener added before this one.
    req.once('end', () => {
      const rec = upstream.requests.findLast((r) => r.headers === req.headers);
      if (rec) rec.url = target;
    });
  });
}

// ---------- recording every response a gateway wrote ----------

export interface Recorded {
  method: string;
  url: string;
  status: number;
  /** the serialised response head as written on the wire */
  head: string;
  body: string;
}

/**
 * Records every response `server` writes (status line + headers as serialised, and the body), from the
 * server's side, so nothing a client library hides or normalises escapes the check.
 */
export function recordResponses(server: http.Server): Recorded[] {
  const out: Recorded[] = [];
  server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    const keep = (chunk: unknown, encoding?: unknown) => {
      if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
      else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
    };
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => http.ServerResponse;
    (res as unknown as { write: (...args: unknown[]) => boolean }).write = (...args: unknown[]) => {
      keep(args[0], args[1]);
      return write(...args);
    };
    (res as unknown as { end: (...args: unknown[]) => http.ServerResponse }).end = (...args: unknown[]) => {
      if (typeof args[0] !== 'function') keep(args[0], args[1]);
      return end(...args);
    };
    res.on('close', () => {
      const head = (res as unknown as { _header?: string | null })._header ?? JSON.stringify(res.getHeaders());
      out.push({
        method: req.method ?? '',
        url: req.url ?? '',
        status: res.statusCode,
        head: String(head),
        body: Buffer.concat(chunks).toString('utf8'),
      });
    });
  });
  return out;
}

/** Waits until the recorder has seen every response that was sent (the 'close' event comes a tick late). */
export const settle = () => sleep(50);

// ---------- cookies ----------

export interface ParsedCookie {
  name: string;
  value: string;
  /** attribute names lower-cased; value '' for flags */
  attrs: Map<string, string>;
  raw: string;
}

export function setCookies(res: { headers: http.IncomingHttpHeaders } | Response): string[] {
  const h = res.headers['set-cookie'];
  return h === undefined ? [] : ([] as string[]).concat(h);
}

export function parseSetCookie(line: string): ParsedCookie {
  const [pair = '', ...rest] = line.split(';');
  const eq = pair.indexOf('=');
  const attrs = new Map<string, string>();
  for (const a of rest) {
    const i = a.indexOf('=');
    const k = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    if (k) attrs.set(k, i < 0 ? '' : a.slice(i + 1).trim());
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs, raw: line };
}

/** The Set-Cookie lines of `res` for cookie `name`, parsed. */
export function cookiesNamed(res: { headers: http.IncomingHttpHeaders } | Response, name: string): ParsedCookie[] {
  return setCookies(res)
    .map(parseSetCookie)
    .filter((c) => c.name === name);
}

/** The one cookie `name` that `res` sets to a non-empty value (throws otherwise). */
export function issuedCookie(res: { headers: http.IncomingHttpHeaders } | Response, name: string): ParsedCookie {
  const set = cookiesNamed(res, name).filter((c) => c.value !== '');
  if (set.length !== 1) throw new Error(`expected one ${name} cookie, got ${JSON.stringify(setCookies(res))}`);
  return set[0]!;
}

/** The session id inside a raw (URL-encoded) express-session cookie value `s%3A<id>.<sig>`. */
export function sessionIdOf(rawCookieValue: string): string {
  const m = /^s:([^.]+)\./.exec(decodeURIComponent(rawCookieValue));
  if (!m) throw new Error(`not a signed session cookie: ${rawCookieValue}`);
  return m[1]!;
}

/** express-session's cookie value for `id` signed with `secret` (cookie-signature), URL-encoded as it sends it. */
export function signedCookieValue(id: string, secret: string): string {
  const sig = createHmac('sha256', secret).update(id).digest('base64').replace(/=+$/, '');
  return encodeURIComponent(`s:${id}.${sig}`);
}

/** A well-formed session cookie value nobody issued: a random id with a random signature. */
export function forgedCookieValue(): string {
  const sig = randomBytes(32).toString('base64').replace(/=+$/, '');
  return encodeURIComponent(`s:${randomBytes(32).toString('base64url')}.${sig}`);
}

export const b64urlSha256 = (s: string) => createHash('sha256').update(s).digest('base64url');

// ---------- login pieces ----------

export interface StartedLogin {
  /** the 302 of GET /auth/login */
  start: Response;
  authorizationUrl: URL;
  state: string;
  nonce: string;
  challenge: string;
}

export async function startLogin(agent: Agent, path = '/auth/login', headers: Record<string, string> = {}): Promise<StartedLogin> {
  const start = await agent.get(path).set(headers).redirects(0);
  if (start.status !== 302) throw new Error(`GET ${path}: ${start.status} ${start.text}`);
  const authorizationUrl = new URL(String(start.headers.location));
  const p = authorizationUrl.searchParams;
  return { start, authorizationUrl, state: p.get('state') ?? '', nonce: p.get('nonce') ?? '', challenge: p.get('code_challenge') ?? '' };
}

/** Drives the IdP for a started login; returns the gateway callback's path and query. */
export async function callbackPathFor(idp: TestIdp, login: StartedLogin, sub: string): Promise<string> {
  const u = new URL(await followIdp(idp, login.authorizationUrl.href, sub));
  return u.pathname + u.search;
}

// ---------- Redis and secrets ----------

export interface RedisEntry {
  key: string;
  type: string;
  /** every string the key holds (string value, hash fields and values, members...) joined by newlines */
  value: string;
  pttl: number;
}

/** Every key under the stack's prefix, whatever its type, with its content and TTL in ms. */
export async function dumpAll(stack: Stack): Promise<RedisEntry[]> {
  const r = stack.redis!;
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await r.scan(cursor, 'MATCH', `${stack.prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const out: RedisEntry[] = [];
  for (const key of [...new Set(keys)]) {
    const type = await r.type(key);
    let parts: string[] = [];
    if (type === 'string') parts = [(await r.get(key)) ?? ''];
    else if (type === 'hash') parts = Object.entries(await r.hgetall(key)).flat();
    else if (type === 'set') parts = await r.smembers(key);
    else if (type === 'zset') parts = await r.zrange(key, '0', '-1');
    else if (type === 'list') parts = await r.lrange(key, 0, -1);
    else if (type === 'none') continue; // expired meanwhile
    out.push({ key, type, value: parts.join('\n'), pttl: await r.pttl(key) });
  }
  return out;
}

/** Which of `needles` occur in `haystack` (each reported by a short prefix only, never in full). */
export function leaks(haystack: string, needles: Iterable<string>): string[] {
  const found: string[] = [];
  for (const n of needles) if (n.length >= 8 && haystack.includes(n)) found.push(`${n.slice(0, 6)}…(${n.length} chars)`);
  return found;
}

/** A token string and the forms it could appear in (as is, and URL-encoded). */
export function tokenForms(tokens: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const t of tokens) {
    out.add(t);
    out.add(encodeURIComponent(t));
  }
  return [...out];
}

/**
 * The text of a recorded response to scan for tokens. The one tolerated exception is the answer to
 * POST /auth/logout, whose `logoutUrl` at the IdP's end-session endpoint carries the ID token as
 * `id_token_hint`: that parameter is blanked, only there, and only when the URL points at `issuer`.
 */
export function scannable(r: Recorded, issuer: string): string {
  let body = r.body;
  if (r.url.startsWith('/auth/logout')) {
    try {
      const json = JSON.parse(body) as { logoutUrl?: unknown };
      if (typeof json.logoutUrl === 'string' && json.logoutUrl.startsWith(`${issuer}/`)) {
        const u = new URL(json.logoutUrl);
        u.searchParams.set('id_token_hint', '');
        body = JSON.stringify({ ...json, logoutUrl: u.href });
      }
    } catch {
      /* not JSON: scanned as is */
    }
  }
  return `${r.head}\n${body}`;
}
