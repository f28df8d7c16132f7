/**
 * The browsers' HTTP: node:http over keep-alive agents (cheap enough that a few hundred browsers cost the
 * machine little), a cookie jar per browser and site, and a deadline per request.
 */
import http from 'node:http';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export class RequestFailed extends Error {
  /** `reused`: the request went out on a kept-alive connection (which the server may have just closed) */
  constructor(
    readonly code: string,
    readonly reused = false,
  ) {
    super(code);
  }
}

const agents = new Map<string, http.Agent>();
function agentFor(origin: string): http.Agent {
  let a = agents.get(origin);
  if (!a) agents.set(origin, (a = new http.Agent({ keepAlive: true, maxSockets: 512, keepAliveMsecs: 1000 })));
  return a;
}

/** Drops the idle keep-alive connections to `origin` (a replica that was killed and started again). */
export function forgetConnections(origin: string): void {
  agents.get(origin)?.destroy();
  agents.delete(origin);
}

export function request(
  url: string,
  o: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<Answer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method: o.method ?? 'GET', headers, agent: agentFor(u.origin) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', (err: NodeJS.ErrnoException) => reject(new RequestFailed(err.code ?? 'ECONNRESET')));
      },
    );
    req.setTimeout(o.timeoutMs ?? 30_000, () => req.destroy(new RequestFailed('TIMEOUT')));
    req.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err instanceof RequestFailed
          ? err
          : new RequestFailed(
              err.code === 'ECONNRESET' || err.message === 'socket hang up' ? 'ECONNRESET' : (err.code ?? err.message),
              req.reusedSocket,
            ),
      ),
    );
    req.end(o.body);
  });
}

/** Cookies by name, as one site set them (no paths or domains: each jar belongs to one site). */
export class Jar {
  private readonly cookies = new Map<string, string>();

  take(a: Answer): void {
    const set = a.headers['set-cookie'] ?? [];
    for (const line of set) {
      const [pair = '', ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = value === '' || attrs.some((x) => /^\s*max-age=0\s*$/i.test(x) || /^\s*expires=Thu, 01 Jan 1970/i.test(x));
      if (expired) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  get(name: string): string | undefined {
    return this.cookies.get(name);
  }

  delete(name: string): void {
    this.cookies.delete(name);
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

/** `error` of a JSON error body, or '' */
export function errorCode(a: Answer): string {
  if (!a.body.startsWith('{')) return '';
  try {
    const e = (JSON.parse(a.body) as { error?: unknown }).error;
    return typeof e === 'string' ? e : '';
  } catch {
    return '';
  }
}
