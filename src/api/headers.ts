/**
 * Header rules for /api as data, applied by one function each way.
 *
 * Upstream (RFC 9110 §7.6.1): drop hop-by-hop fields and every field the browser's Connection
 * header names (before adding ours, so `Connection: authorization` cannot strip the injected token),
 * the browser's credentials (Cookie, Authorization, Proxy-Authorization, X-CSRF), and the identity,
 * client-address and routing headers an upstream might trust (DROPPED_REQUEST_HEADERS, its prefixes and
 * the operator's dropHeaders); then set exactly one Authorization and our own X-Forwarded-*.
 *
 * Browser: no upstream Set-Cookie (an upstream could otherwise overwrite our session cookie on
 * our origin) unless its route allows them, and then never one named like one of ours; no hop-by-hop
 * fields, and `Cache-Control: no-store` when the upstream set no caching policy.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
];
/**
 * Request fields that assert who the user is or where the request came from. Auth proxies (oauth2-proxy,
 * Authelia, Pomerium, cloud load balancers, API gateways, CDNs) set them, and upstreams behind such proxies
 * commonly trust them as they arrive; from a browser they are forged, so none is ever forwarded. Exact names
 * here, families by prefix below; an operator adds more names with `dropHeaders`.
 */
export const DROPPED_REQUEST_HEADERS: readonly string[] = [
  // the browser's own credentials: the upstream gets the gateway's Bearer instead
  'cookie',
  'authorization',
  'dpop', // a proof is the gateway's to make (RFC 9449): never one of the browser's
  'x-csrf',
  // identity and tokens
  'x-email',
  'x-preferred-username',
  'x-groups',
  'x-id-token',
  'x-access-token',
  'x-api-key',
  'x-jwt-assertion',
  'x-credential-identifier',
  'x-anonymous-consumer',
  // client address (the upstream gets our X-Forwarded-For)
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'x-cluster-client-ip',
  'client-ip',
  'true-client-ip',
  'fastly-client-ip',
  'x-originating-ip',
  'x-proxyuser-ip',
  'x-azure-clientip',
  'x-azure-socketip',
  // Some frameworks route on these instead of the request line or method: they would bypass the path guard.
  'x-host',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  // client certificate (mTLS) assertions
  'x-arr-clientcert',
  'x-client-verify',
  'x-client-dn',
];

/** Families of such fields: every name that starts with one of these is dropped too. */
export const DROPPED_REQUEST_HEADER_PREFIXES: readonly string[] = [
  'x-forwarded', // -for, -host, -proto, -user, -email, -groups, -access-token, -client-cert... (ours are set after)
  'x-user', // x-user, x-userinfo, x-username, x-user-id...
  'x-auth', // x-auth-request-*, x-authenticated-*, x-auth-token...
  'x-gatehouse',
  'remote-', // Remote-User, Remote-Groups, Remote-Email, Remote-Name
  'x-remote-', // X-Remote-User, X-Remote-Addr...
  'x-original-', // X-Original-URL, -URI, -Host, -Method, -Forwarded-For
  'x-consumer-',
  'x-amzn-oidc-',
  'x-amzn-mtls-',
  'x-ms-client-principal',
  'x-ms-token-',
  'x-goog-authenticated-user-',
  'x-goog-iap-',
  'x-webauth-',
  'x-pomerium-',
  'x-vouch-',
  'x-envoy-',
  'cf-', // CF-Connecting-IP, CF-IPCountry, CF-Visitor, Cf-Access-Authenticated-User-Email...
  'x-ssl-',
  'ssl-client-',
  'x-client-cert',
];

const DROP_UPSTREAM = new Set([...HOP_BY_HOP, ...DROPPED_REQUEST_HEADERS]);
/**
 * Request smuggling: a `Connection` header naming the message's framing (or Host) must never make the
 * proxy drop it, or the body would reach the pooled upstream connection unframed and be read there as
 * another request. Such a request is refused (framingNamedInConnection) and the names are never dropped.
 */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'host']);
// The prefixes are plain lower-case names (letters and '-'): nothing in them needs escaping.
const DROP_UPSTREAM_PREFIX = new RegExp(`^(?:${DROPPED_REQUEST_HEADER_PREFIXES.join('|')})`);
const DROP_DOWNSTREAM = new Set([...HOP_BY_HOP, 'set-cookie']);
/** Methods node:http sends without framing when they have no body (the rest default to chunked). */
const BODYLESS_BY_DEFAULT = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

const NONE: readonly string[] = [];

function connectionNamed(headers: IncomingHttpHeaders): readonly string[] {
  const c = headers.connection;
  if (typeof c !== 'string') return NONE;
  // The usual values name no other field (hop-by-hop `keep-alive` is dropped anyway): nothing to split.
  if (c === 'keep-alive' || c === 'close' || c === 'Keep-Alive' || c === 'Close') return NONE;
  return c
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

export interface Forwarded {
  method: string | undefined;
  /** The bearer to send; absent: no Authorization field at all. */
  accessToken?: string;
  clientIp: string | undefined;
  proto: string;
  host: string;
  /** The upstream's own name, never the browser's. */
  upstreamHost: string;
}

/**
 * The exact names dropped on the way upstream: the built-in ones and an operator's (lower-case). Framing
 * names are never dropped, whoever lists them: a body without its framing would be read upstream as the
 * next request.
 */
export function droppedNames(extra: readonly string[]): ReadonlySet<string> {
  return new Set([...DROP_UPSTREAM, ...extra.filter((name) => !FRAMING.has(name))]);
}

function isDroppedSpelling(name: string, drop: ReadonlySet<string>): boolean {
  return name === 'host' || drop.has(name) || DROP_UPSTREAM_PREFIX.test(name);
}

/** True when the browser's Connection header names a framing header: the request is refused (400). */
export function framingNamedInConnection(headers: IncomingHttpHeaders): boolean {
  return connectionNamed(headers).some((name) => FRAMING.has(name));
}

/**
 * The header fields the upstream receives, built from the browser's, as a flat `[name, value, ...]` list (a
 * repeated field stays repeated). Authorization only when `fwd.accessToken` is given.
 */
export function upstreamHeaders(headers: IncomingHttpHeaders, fwd: Forwarded, drop: ReadonlySet<string> = DROP_UPSTREAM): string[] {
  const named = connectionNamed(headers);
  const out: string[] = [];
  for (const name of Object.keys(headers)) {
    if (name === 'host' || drop.has(name) || DROP_UPSTREAM_PREFIX.test(name)) continue;
    // CGI-style servers (WSGI, Rack, PHP) read `X_Forwarded_User` as the same variable as
    // `X-Forwarded-User`: a name with '_' is judged as its '-' spelling.
    if (name.includes('_') && isDroppedSpelling(name.replaceAll('_', '-'), drop)) continue;
    if (named.length > 0 && named.includes(name) && !FRAMING.has(name)) continue;
    const value = headers[name]!;
    if (typeof value === 'string') out.push(name, value);
    else for (const v of value) out.push(name, v); // a repeated field Node did not join (Set-Cookie)
  }
  // Transfer-Encoding stays: Node already validated the framing (no TE + Content-Length smuggling) and
  // re-frames the body; dropping it would leave a chunked DELETE without framing. Its connection is not
  // reused afterwards (as http-proxy does), so no disagreement about where the body ended can reach the
  // next request on that pooled connection.
  if (headers['transfer-encoding'] !== undefined) out.push('connection', 'close');
  // RFC 9112 §6.3: a request with neither field has no body. Given its head up front, node:http would frame
  // a POST, PUT or PATCH as chunked; say so as Content-Length: 0, as it does when it sees the empty body.
  else if (headers['content-length'] === undefined && !BODYLESS_BY_DEFAULT.has(fwd.method ?? '')) out.push('content-length', '0');
  out.push('host', fwd.upstreamHost);
  if (fwd.accessToken !== undefined) out.push('authorization', `Bearer ${fwd.accessToken}`);
  if (fwd.clientIp) out.push('x-forwarded-for', fwd.clientIp);
  out.push('x-forwarded-proto', fwd.proto, 'x-forwarded-host', fwd.host);
  return out;
}

/**
 * The upstream's cookies a route lets through: every Set-Cookie but those that would set one of the gateway's
 * own cookies. Judged on the name a browser stores, and on the name it would send back: a cookie with an empty
 * name (`=gatehouse=x`, RFC 6265bis §5.7) is sent as its bare value, which a server reads as `gatehouse=x`.
 */
export function allowedSetCookies(values: readonly string[], own: (name: string) => boolean): string[] {
  return values.filter((line) => {
    const pair = (line.split(';', 1)[0] ?? '').replace(/^[\s=]+/, '');
    const eq = pair.indexOf('=');
    return !own((eq < 0 ? pair : pair.slice(0, eq)).trim());
  });
}

/**
 * The headers the browser receives, built from the upstream's. `ownCookie`: the route lets the upstream's
 * Set-Cookie through, but never one for a cookie this predicate names (the gateway's own).
 */
export function downstreamHeaders(headers: IncomingHttpHeaders, ownCookie?: (name: string) => boolean): OutgoingHttpHeaders {
  const named = connectionNamed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const name of Object.keys(headers)) {
    if (DROP_DOWNSTREAM.has(name)) continue;
    if (named.length > 0 && named.includes(name) && name !== 'close' && name !== 'keep-alive') continue;
    out[name] = headers[name];
  }
  if (ownCookie && headers['set-cookie'] !== undefined && !named.includes('set-cookie')) {
    const kept = allowedSetCookies(headers['set-cookie'], ownCookie);
    if (kept.length > 0) out['set-cookie'] = kept;
  }
  if (out['cache-control'] === undefined) out['cache-control'] = 'no-store';
  return out;
}
