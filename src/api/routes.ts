/**
 * The route table: which upstream serves which path under /api, and with what token policy. Parsed once at
 * start-up from the config file's `routes` array or GATEHOUSE_ROUTES (the same JSON), every problem reported
 * at once, one line each; then frozen. Without either, one route: `/api` → GATEHOUSE_UPSTREAM, token `user`.
 *
 * Matching is by path prefix at segment boundaries, the longest prefix winning, on the path the path guard
 * already accepted (pathGuard.ts): `/api/orders` serves `/api/orders` and `/api/orders/1`, never
 * `/api/ordersX`.
 */

/**
 * user: a session is required (401 without) and its access token is sent; optional: the token is sent when
 * there is a session, and no 401 without one; none: no session is looked up and no Authorization is sent;
 * client: no session is looked up, and the gateway's own token (client credentials grant) is sent.
 */
export type TokenPolicy = 'user' | 'optional' | 'none' | 'client';

export interface Route {
  /** `/api` or a path under it, without a trailing slash. */
  readonly path: string;
  /** The path below /api (`''` for /api itself, `/orders` for /api/orders): what requests are matched on. */
  readonly prefix: string;
  readonly upstream: URL;
  readonly token: TokenPolicy;
  /** Allowed methods, upper case; undefined: all but TRACE and CONNECT. */
  readonly methods: ReadonlySet<string> | undefined;
  readonly timeoutSeconds: number;
  readonly allowSetCookie: boolean;
  readonly websocket: boolean;
  /** A token of its own for this API (RFC 8707 resource and/or scopes); undefined: the login's access token. */
  readonly audience: Audience | undefined;
}

/**
 * Which access token a route sends: one obtained for its `resource` (RFC 8707) and/or `scope`, with the
 * session's refresh token. `key` names it in the session's token record.
 */
export interface Audience {
  readonly key: string;
  /** The route's path, for log lines. */
  readonly route: string;
  readonly resource?: string;
  readonly scope?: string;
}

export interface RouteMatch {
  route: Route;
  /** What follows the route's path (`/1?x` for /api/orders/1?x under /api/orders; `/` for the path itself). */
  rest: string;
}

const FIELDS = ['path', 'upstream', 'token', 'methods', 'timeoutSeconds', 'allowSetCookie', 'websocket', 'resource', 'scope'] as const;
/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const POLICIES = ['user', 'optional', 'none', 'client'];
/** RFC 9110 §5.6.2: a method is a token. */
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A route path: segments of unreserved characters under /api (nothing the path guard would refuse). */
const ROUTE_PATH = /^\/api(?:\/[A-Za-z0-9_~-][A-Za-z0-9_.~-]*)*$/;
const EXAMPLE = '[{"path": "/api", "upstream": "https://api.internal"}]';

/**
 * Parses the routes (`raw`: an array, or JSON text from GATEHOUSE_ROUTES); `where` names the setting in
 * problems. Without routes, the default route to `upstream`. Problems go to `fail`, one line each.
 */
export function parseRoutes(
  raw: unknown,
  defaults: { upstream: URL | undefined; timeoutSeconds: number; scopes?: string; scopesName?: string },
  where: string,
  fail: (problem: string) => void,
): Route[] {
  if (raw === undefined) {
    if (!defaults.upstream) return [];
    return [defaultRoute(defaults.upstream, defaults.timeoutSeconds)];
  }
  let list: unknown = raw;
  if (typeof raw === 'string') {
    try {
      list = JSON.parse(raw) as unknown;
    } catch {
      fail(`${where}: is not valid JSON — give an array of routes, e.g. ${EXAMPLE}`);
      return [];
    }
  }
  if (!Array.isArray(list) || list.length === 0) {
    fail(`${where}: must be a non-empty array of routes, e.g. ${EXAMPLE}`);
    return [];
  }
  const routes: Route[] = [];
  const seen = new Set<string>();
  list.forEach((item: unknown, i) => {
    const at = `${where}[${i}]`;
    const route = parseRoute(item, at, defaults, fail);
    if (!route) return;
    if (seen.has(route.path)) fail(`${at}.path: "${route.path}" is used by an earlier route — give each path one route`);
    else {
      seen.add(route.path);
      routes.push(route);
    }
  });
  return routes;
}

function defaultRoute(upstream: URL, timeoutSeconds: number): Route {
  return Object.freeze({
    path: '/api',
    prefix: '',
    upstream,
    token: 'user',
    methods: undefined,
    timeoutSeconds,
    allowSetCookie: false,
    websocket: false,
    audience: undefined,
  } satisfies Route);
}

function parseRoute(
  item: unknown,
  at: string,
  defaults: { timeoutSeconds: number; scopes?: string; scopesName?: string },
  fail: (problem: string) => void,
): Route | undefined {
  const defaultTimeout = defaults.timeoutSeconds;
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    fail(`${at}: must be an object such as {"path": "/api/orders", "upstream": "https://orders.internal"}`);
    return undefined;
  }
  const o = item as Record<string, unknown>;
  let ok = true;
  const problem = (field: string, msg: string) => {
    ok = false;
    fail(`${at}.${field}: ${msg}`);
  };
  const unknown = Object.keys(o).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknown.length) {
    ok = false;
    fail(`${at}: unknown field ${unknown.map((k) => `"${k}"`).join(', ')} — known: ${FIELDS.join(', ')}`);
  }

  const path = o.path;
  if (typeof path !== 'string') problem('path', 'is required — a path under /api, e.g. "/api/orders"');
  else if (!ROUTE_PATH.test(path))
    problem('path', `"${path}" is not /api or a path under it (letters, digits, - _ . ~; no trailing slash) — e.g. "/api/orders"`);

  let upstream: URL | undefined;
  if (typeof o.upstream !== 'string') problem('upstream', 'is required — an absolute http(s) URL, e.g. "https://orders.internal/v1"');
  else {
    try {
      upstream = new URL(o.upstream);
    } catch {
      problem('upstream', `"${o.upstream}" is not an absolute URL — e.g. "https://orders.internal/v1"`);
    }
    if (upstream && upstream.protocol !== 'http:' && upstream.protocol !== 'https:') problem('upstream', 'must be an http(s) URL');
    else if (upstream && (upstream.search || upstream.hash)) problem('upstream', 'must not have a query or fragment');
    else if (upstream && (upstream.username || upstream.password))
      problem('upstream', 'must not carry credentials — remove the user:password@ part');
  }

  const token = o.token ?? 'user';
  if (typeof token !== 'string' || !POLICIES.includes(token))
    problem('token', `${JSON.stringify(token)} is not a token policy — use user (default), optional, none or client`);

  let methods: Set<string> | undefined;
  if (o.methods !== undefined) {
    if (!Array.isArray(o.methods) || o.methods.length === 0 || !o.methods.every((m) => typeof m === 'string' && METHOD.test(m)))
      problem('methods', 'must be a non-empty array of method names, e.g. ["GET", "POST"]');
    else {
      methods = new Set((o.methods as string[]).map((m) => m.toUpperCase()));
      for (const refused of ['TRACE', 'CONNECT']) if (methods.has(refused)) problem('methods', `${refused} is never proxied — remove it`);
    }
  }

  const timeoutSeconds = o.timeoutSeconds ?? defaultTimeout;
  if (typeof timeoutSeconds !== 'number' || !Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > 3600)
    problem('timeoutSeconds', `${JSON.stringify(timeoutSeconds)} is not a whole number of seconds from 1 to 3600`);

  for (const flag of ['allowSetCookie', 'websocket'] as const)
    if (o[flag] !== undefined && typeof o[flag] !== 'boolean') problem(flag, `${JSON.stringify(o[flag])} is not true or false`);

  // RFC 8707 §2: a resource is an absolute URI without a fragment.
  let resource: string | undefined;
  if (o.resource !== undefined) {
    if (typeof o.resource !== 'string' || !URL.canParse(o.resource) || new URL(o.resource).hash !== '' || o.resource.includes('#'))
      problem('resource', `${JSON.stringify(o.resource)} is not an absolute URI without a fragment — e.g. "https://orders.example/"`);
    else resource = o.resource;
  }
  // A refresh may ask for no more than the login was granted (RFC 6749 §6): the route's scopes must be asked at login.
  let scope: string | undefined;
  if (o.scope !== undefined) {
    const tokens = typeof o.scope === 'string' ? o.scope.split(' ').filter(Boolean) : [];
    const granted = new Set((defaults.scopes ?? '').split(/\s+/).filter(Boolean));
    if (tokens.length === 0 || !tokens.every((t) => SCOPE_TOKEN.test(t)))
      problem('scope', `${JSON.stringify(o.scope)} is not a space-separated list of scopes — e.g. "orders:read"`);
    else if (defaults.scopes !== undefined && !tokens.every((t) => granted.has(t)))
      problem(
        'scope',
        `${tokens.filter((t) => !granted.has(t)).join(' ')} not among ${defaults.scopesName ?? 'the login scopes'} — add it there, so the login asks for it`,
      );
    else scope = tokens.join(' ');
  }
  if ((resource !== undefined || scope !== undefined) && token === 'none')
    problem('token', '"none" sends no token, so resource and scope mean nothing here — remove them or use user or optional');

  if (!ok) return undefined;
  return Object.freeze({
    path: path as string,
    prefix: (path as string).slice(4),
    upstream: upstream!,
    token: token as TokenPolicy,
    methods,
    timeoutSeconds: timeoutSeconds as number,
    allowSetCookie: o.allowSetCookie === true,
    websocket: o.websocket === true,
    audience:
      resource !== undefined || scope !== undefined || token === 'client'
        ? Object.freeze({
            key: `${resource ?? ''} ${scope ?? ''}`,
            route: path as string,
            ...(resource && { resource }),
            ...(scope && { scope }),
          })
        : undefined,
  } satisfies Route);
}

/** Finds a request's route: the longest route path that is the request's path or a segment prefix of it. */
export class RouteTable {
  /** Longest prefix first, so the first match is the longest. */
  private readonly byLength: readonly Route[];

  constructor(readonly routes: readonly Route[]) {
    this.byLength = [...routes].sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** `relative`: the request's path and query below /api, as the path guard returned it (`/orders/1?x`). */
  match(relative: string): RouteMatch | undefined {
    const q = relative.indexOf('?');
    const path = q < 0 ? relative : relative.slice(0, q);
    for (const route of this.byLength) {
      const p = route.prefix;
      if (p === '' || path === p || path.startsWith(`${p}/`)) {
        const rest = relative.slice(p.length);
        return { route, rest: rest === '' || rest[0] === '?' ? `/${rest}` : rest };
      }
    }
    return undefined;
  }
}
