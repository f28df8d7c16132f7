/**
 * /api → one route's upstream, through http-proxy-middleware (its engine: httpxy). The request streams to
 * the upstream over a keep-alive connection of the route's own pool, and the answer streams back (nothing is
 * buffered, so uploads and SSE stream both ways).
 *
 * How the proxy is used, and why:
 * - One proxy per route, created once, called with the node:http request and response (never through
 *   Express). Its default plugins are ejected (their logging and error pages cost throughput and would print
 *   internal addresses); with them goes the `on:` option, so everything here is one plugin subscribed to the
 *   proxy server's events.
 * - The upstream request is rewritten when it gets its connection (`proxyReq`): the path (the base path plus
 *   what the path guard accepted, byte for byte) and the whole header section (headers.ts: the browser's
 *   credentials, identity and hop-by-hop fields out; our Bearer, X-Forwarded-* and the upstream's Host in).
 * - The answer is relayed here (`selfHandleResponse`): the status and reason phrase are checked, the header
 *   rules applied, and a 401 invalid_token to a request without a body can be replayed once with a new token
 *   before the browser sees anything. The replay goes straight to the proxy's engine, with the options the
 *   proxy prepared for the first request and an empty body (httpxy's `buffer`), so that no per-request hook
 *   (a `router`) costs every other request anything.
 * - Timeouts are ours: the proxy's `proxyTimeout` is a socket-idle timer that would cut a quiet SSE stream.
 *
 * The upstream is not trusted to behave: whatever it answers (or does not), every exchange ends with the
 * upstream's answer, a 502/504 of ours, or a cut connection, and its upstream connection is freed.
 */
import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { createProxyMiddleware, type Plugin } from 'http-proxy-middleware';
import type { Config } from '../config/schema';
import type { Logger } from '../log/logger';
import type { Metrics, UpstreamErrorKind } from '../health/metrics';
import { pathOf } from '../http/exchange';
import { clientAddress } from '../http/clientAddress';
import { answerError, RETRY_AFTER_SECONDS, sendError } from '../http/errors';
import { downstreamHeaders, droppedNames, upstreamHeaders } from './headers';
import { authorization, dpopProof, type UpstreamToken } from '../tokens/dpop';

/** One route's upstream. */
export interface ForwardRoute {
  upstream: URL;
  timeoutSeconds: number;
  allowSetCookie: boolean;
}

/** Settings every route shares. */
export interface ForwardShared {
  publicOrigin: string;
  trustProxy: number;
  upstreamConnectTimeoutSeconds: number;
  upstreamSocketsPerSession: number;
  dropHeaders: readonly string[];
  ownCookieNames: (name: string) => boolean;
}

/** What the lane decided for this request (typed per-request state). */
export interface Exchange {
  /** Path and query to append to the upstream's base path (already checked by the path guard). */
  upstreamPath: string;
  /** The access token to send (with a DPoP proof when it is bound); absent: no Authorization header at all. */
  token?: UpstreamToken;
  /** Who the in-flight bound counts: the session's storage hash, or for requests without a session the client address. */
  bound: string;
  /**
   * Present when the request carried a user token: called when the upstream answered 401 with
   * `WWW-Authenticate: Bearer ... error="invalid_token"` to a request WITHOUT a body (GET, HEAD, OPTIONS, or DELETE
   * with neither Content-Length > 0 nor Transfer-Encoding). Resolves to a new access token (replay once with it and
   * pass the second answer through whatever it is), or to undefined when the hook has answered the browser itself
   * (e.g. 401 session_expired, 503) — then the upstream's 401 is discarded. A request with a body is never replayed.
   * (`DPoP error="invalid_token"` counts the same; `use_dpop_nonce` does not: it asks for a proof, not a token.)
   */
  retryWithNewToken?: () => Promise<UpstreamToken | undefined>;
}

export interface Forwarder {
  forward(req: IncomingMessage, res: ServerResponse, exchange: Exchange): void;
  close(): void;
}

/** The gateway's own cookies (http/cookies.ts): the session cookie and the per-login transaction cookies. */
const OWN_COOKIE = /^(?:gatehouse|__host-http-gatehouse|gatehouse-tx.*|__host-gatehouse-tx.*)$/i;

/**
 * True for a cookie name that is one of the gateway's, in any letter case (a browser applies the `__Host-`
 * rules to any case of the prefix, RFC 6265bis §4.1.3): an upstream may never set one.
 */
export function isGatehouseCookie(name: string): boolean {
  return OWN_COOKIE.test(name);
}

/** The shared settings, from the configuration. */
export function forwardShared(
  cfg: Pick<Config, 'publicOrigin' | 'trustProxy' | 'upstreamConnectTimeoutSeconds' | 'upstreamSocketsPerSession' | 'dropHeaders'>,
): ForwardShared {
  return {
    publicOrigin: cfg.publicOrigin,
    trustProxy: cfg.trustProxy,
    upstreamConnectTimeoutSeconds: cfg.upstreamConnectTimeoutSeconds,
    upstreamSocketsPerSession: cfg.upstreamSocketsPerSession,
    dropHeaders: cfg.dropHeaders,
    ownCookieNames: isGatehouseCookie,
  };
}

/** RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ); anything else is not sent on. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Methods whose request, without Content-Length > 0 or Transfer-Encoding, has no body to send again. */
const REPLAYABLE = new Set(['GET', 'HEAD', 'OPTIONS', 'DELETE']);

/** One browser request's way through the upstream: its first upstream request, and the replay if any. */
interface Flight {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly exchange: Exchange;
  /** The upstream request's header fields but Authorization, from the browser's as they arrived. */
  readonly headers: readonly string[];
  readonly path: string;
  /** The token of the current upstream request, and the DPoP proof that goes with it when it is bound. */
  token: UpstreamToken | undefined;
  proof: string | undefined;
  /** The request announced a body (Content-Length > 0 or Transfer-Encoding). */
  readonly hasBody: boolean;
  /** A method whose request, without a body, can be sent again. */
  readonly replayable: boolean;
  /** The current upstream request is sent again (its body is an empty stream, the browser's was read). */
  replay: boolean;
  /** Sent again once with a new token, after the upstream refused the first (invalid_token). */
  renewed: boolean;
  /** Sent again once with the upstream's DPoP nonce (RFC 9449 §9). */
  nonced: boolean;
  /** The proxy's options for this request, as it prepared them for the first upstream request. */
  options: EngineOptions | undefined;
  /** connect: until a connected socket is ours (queued in the pool counts); wait: until the response head. */
  phase: 'connect' | 'wait' | 'answer';
  timer: NodeJS.Timeout | undefined;
  upstream: ClientRequest | undefined;
  /** The browser went away: nothing to answer, nothing worth a warning. */
  gone: boolean;
  /** Logged, counted and answered once. */
  failed: boolean;
}

/**
 * Each response carries its flight under this key: the proxy's events name the response. (Measured under
 * load: a WeakMap keyed by every response kept the garbage collector busy several times longer.)
 */
const FLIGHT = Symbol('gatehouse.flight');
/** http-proxy-middleware's engine (httpxy's ProxyServer), as a plugin gets it, and its per-request options. */
type Engine = Parameters<Plugin>[0];
type EngineOptions = NonNullable<Parameters<Engine['web']>[2]>;
type Carrier = ServerResponse & { [FLIGHT]?: Flight };
const flightOf = (res: unknown): Flight | undefined => (res as Carrier)[FLIGHT];

export function createForwarder(route: ForwardRoute, shared: ForwardShared, log: Logger, metrics: Metrics): Forwarder {
  const upstream = route.upstream;
  const secure = upstream.protocol === 'https:';
  const agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 512 }) : new http.Agent({ keepAlive: true, maxSockets: 512 });
  const base = upstream.pathname.replace(/\/+$/, '');
  const publicUrl = new URL(shared.publicOrigin);
  const proto = publicUrl.protocol.slice(0, -1);
  const drop = droppedNames(shared.dropHeaders);
  const connectMs = shared.upstreamConnectTimeoutSeconds * 1000;
  const answerMs = route.timeoutSeconds * 1000;
  // RFC 9449 §4.2: a proof's htu is the request's URI without query and fragment.
  const origin = `${upstream.protocol}//${upstream.host}`;
  // RFC 9449 §9: the nonce the upstream gave last goes into the next proofs (sparing a retry each time).
  let upstreamNonce: string | undefined;
  const ownCookie = route.allowSetCookie ? shared.ownCookieNames : undefined;
  // Upstream requests in flight per bound (a session): one user's requests can hold at most this share of the pool.
  const inFlight = new Map<string, number>();
  const retryAfter = { 'Retry-After': String(RETRY_AFTER_SECONDS) };

  const fail = (f: Flight, kind: UpstreamErrorKind, err?: NodeJS.ErrnoException): void => {
    f.phase = 'answer';
    clearTimeout(f.timer);
    f.upstream?.destroy();
    if (f.gone || f.failed) return;
    f.failed = true;
    const { req, res } = f;
    metrics.upstreamError(kind);
    log.warn({ kind, err: err && { message: err.message, code: err.code }, path: pathOf(req.url) }, 'upstream request failed');
    // An answer already under way is cut, never passed off as whole; a complete one stays as it was.
    if (res.headersSent) {
      if (!res.writableEnded) res.destroy();
      return;
    }
    if (kind === 'connect_timeout' || kind === 'response_timeout') sendError(res, 504, 'upstream_timeout');
    else sendError(res, 502, 'bad_gateway'); // names no host, port or error: internal addresses stay inside
  };

  /**
   * Our own failure, not the upstream's (what throws in these event handlers would otherwise end the process):
   * logged as an error, answered 500 (or the answer cut) as the lane answers a step that threw.
   */
  const broken = (f: Flight, err: unknown): void => {
    f.phase = 'answer';
    clearTimeout(f.timer);
    f.upstream?.destroy();
    if (f.gone || f.failed) return;
    f.failed = true;
    answerError(log, err, f.req, f.res);
  };

  // Timed from the connection to the response head, restarted by each piece of request body, so a slow
  // upload is not cut; never after the head, so a streaming answer (SSE, a download) runs as long as it lasts.
  const waitForAnswer = (f: Flight, up: ClientRequest): void => {
    if (f.upstream !== up || f.phase !== 'connect') return;
    clearTimeout(f.timer);
    f.phase = 'wait';
    f.timer = setTimeout(() => fail(f, 'response_timeout'), answerMs);
  };

  /** Sends the flight's upstream request (again, for a replay), with a new DPoP proof when its token is bound. */
  const send = (f: Flight): void => {
    const key = f.token?.dpop;
    if (!key) return dispatch(f);
    f.proof = undefined;
    dpopProof(key, { method: f.req.method ?? 'GET', url: origin + f.path, accessToken: f.token!.accessToken, nonce: upstreamNonce }).then(
      (proof) => {
        if (f.gone || f.failed) return;
        f.proof = proof;
        dispatch(f);
      },
      (err: unknown) => broken(f, err),
    );
  };

  /** Sends the flight's upstream request through the proxy. */
  const dispatch = (f: Flight): void => {
    f.phase = 'connect';
    f.upstream = undefined;
    f.timer = setTimeout(() => fail(f, 'connect_timeout'), connectMs);
    if (f.replay) {
      // httpxy's `buffer` is what is piped upstream instead of the browser's request, which was read already.
      engine!.web(f.req, f.res, { ...f.options, buffer: Readable.from([]) }).catch((err: unknown) => broken(f, err));
      return;
    }
    void proxy(f.req, f.res, (err?: unknown) => {
      // The proxy calls this when it did not forward: after its 'error' event (handled below), or, without an
      // error, when it would not take the request at all.
      if (err === undefined && !f.failed) {
        log.error({ path: pathOf(f.req.url) }, 'the proxy did not forward the request');
        fail(f, 'reset');
      }
    });
  };

  /** The upstream's answer, relayed to the browser. */
  const relay = (f: Flight, answer: IncomingMessage, status: number): void => {
    const { req, res } = f;
    const headers = downstreamHeaders(answer.headers, ownCookie);
    // RFC 9112 §6.1: no Transfer-Encoding towards an HTTP/1.0 client, nor on a 204 or 304.
    if (req.httpVersion === '1.0' || status === 204 || status === 304) delete headers['transfer-encoding'];
    for (const name of Object.keys(headers)) {
      const value = headers[name];
      if (value === undefined) continue;
      try {
        res.setHeader(name, value);
      } catch {
        // A field Node refuses to send (invalid characters) is dropped, not turned into a 502 mid-answer.
      }
    }
    let phrase = answer.statusMessage;
    if (phrase !== undefined && !REASON_PHRASE.test(phrase)) {
      metrics.upstreamError('malformed');
      log.warn({ kind: 'malformed', status, path: pathOf(req.url) }, 'upstream reason phrase has invalid characters; not sent on');
      phrase = undefined; // Node sends the status's standard phrase
    }
    res.writeHead(status, phrase);
    // RFC 9112 §6.3: an answer to HEAD, and a 204 or 304, ends with its head; what follows it is no part of it.
    if (status === 204 || status === 304 || req.method === 'HEAD') {
      res.end();
      answer.resume();
      return;
    }
    // The proxy cuts the browser's answer when the upstream's is cut; this counts and logs it.
    answer.on('close', () => {
      if (!answer.complete) fail(f, 'reset');
    });
    answer.pipe(res);
  };

  /** The upstream said the token is not good: the hook refreshes it, and the request goes once more. */
  const replay = (f: Flight, answer: IncomingMessage, hook: () => Promise<UpstreamToken | undefined>): void => {
    metrics.upstreamTokenRetried();
    answer.resume(); // this 401 is not the answer: its body is read and dropped, its connection reused
    // Called a microtask later, so that a hook that throws rejects instead of throwing into the proxy's event.
    Promise.resolve()
      .then(hook)
      .then(
        (token) => {
          // undefined: the hook answered the browser itself.
          if (token === undefined || f.gone || f.failed || f.res.headersSent) return;
          f.token = token;
          f.replay = true;
          f.renewed = true;
          send(f);
        },
        (err: unknown) => {
          if (!f.gone) answerError(log, err, f.req, f.res);
        },
      );
  };

  let engine: Engine | undefined;
  const plugin: Plugin = (server) => {
    engine = server;
    server.on('proxyReq', (up, req, res, options) => {
      const f = flightOf(res);
      if (!f || f.failed || f.gone) return void up.destroy();
      f.upstream = up;
      f.options ??= options;
      // Node sends the head with the first piece of body, after this: the path and header section are ours.
      try {
        up.path = f.path;
        for (const name of up.getHeaderNames()) up.removeHeader(name);
        const h = f.headers;
        for (let i = 0; i < h.length; i += 2) up.appendHeader(h[i]!, h[i + 1]!);
        if (f.token !== undefined) up.setHeader('authorization', authorization(f.token));
        if (f.proof !== undefined) up.setHeader('dpop', f.proof);
      } catch (err) {
        return broken(f, err); // a token node:http will not send (invalid characters): nothing goes upstream
      }
      // RFC 9110 §15.2.2: a server switches protocols only when the request asked to (ours never do).
      up.on('upgrade', (_answer, socket) => {
        socket.destroy();
        fail(f, 'malformed', new Error('101 Switching Protocols to a request that asked for no upgrade'));
      });
      // Whatever else ends the exchange without an answer, the browser is not left waiting.
      up.on('close', () => {
        if (f.upstream === up && f.phase !== 'answer') fail(f, 'reset');
      });
      const socket = up.socket!;
      if (socket.connecting) socket.once(secure ? 'secureConnect' : 'connect', () => waitForAnswer(f, up));
      else waitForAnswer(f, up);
      // The proxy pipes the body right after this event (listening now loses none of it).
      if (f.hasBody && !f.replay)
        req.on('data', () => {
          if (f.phase === 'wait' && f.upstream === up) f.timer?.refresh();
        });
    });

    server.on('proxyRes', (answer, _req, res) => {
      const f = flightOf(res);
      if (!f || f.failed || f.gone) return void answer.destroy();
      f.phase = 'answer';
      clearTimeout(f.timer);
      const status = answer.statusCode ?? 0;
      // RFC 9110 §15: a status outside 100..599 is invalid and is handled as a server error; a 1xx is no
      // final answer (Node handles 100 and 103 itself, and 101 is the upgrade above).
      if (status < 200 || status > 599) return fail(f, 'malformed', new Error(`status ${status}`));
      const hook = f.exchange.retryWithNewToken;
      try {
        if (f.proof !== undefined) {
          const nonce = answer.headers['dpop-nonce'];
          if (typeof nonce === 'string' && nonce !== '') upstreamNonce = nonce;
          // RFC 9449 §9: the upstream wants a proof with its nonce. Asked once more with it, a request without
          // a body only; the token was not refused, so this is no reason to refresh it.
          if (status === 401 && !f.nonced && f.replayable && !f.hasBody && dpopNonceChallenge(answer.headers['www-authenticate'])) {
            f.nonced = true;
            f.replay = true;
            answer.resume();
            return send(f);
          }
        }
        if (
          status === 401 &&
          hook &&
          !f.renewed &&
          f.replayable &&
          !f.hasBody &&
          invalidTokenChallenge(answer.headers['www-authenticate'], f.token?.dpop ? 'dpop' : 'bearer')
        ) {
          return replay(f, answer, hook);
        }
        relay(f, answer, status);
      } catch (err) {
        broken(f, err);
      }
    });

    server.on('error', (err: NodeJS.ErrnoException, _req, res) => {
      const f = res && flightOf(res);
      if (!f) return void log.error({ err }, 'upstream proxy error outside any request');
      fail(f, err.code?.startsWith('HPE_') ? 'malformed' : f.phase === 'connect' ? 'unreachable' : 'reset', err);
    });

    // The browser's connection broke while its request was on its way: nothing to answer.
    server.on('econnreset', (_err, _req, res) => {
      const f = flightOf(res);
      if (!f) return;
      f.gone = true;
      fail(f, 'reset');
    });
  };

  const proxy = createProxyMiddleware({
    target: upstream,
    agent,
    changeOrigin: true,
    selfHandleResponse: true,
    ejectPlugins: true,
    plugins: [plugin],
  });

  const forward = (req: IncomingMessage, res: ServerResponse, exchange: Exchange): void => {
    const bound = exchange.bound;
    const open = inFlight.get(bound) ?? 0;
    if (open >= shared.upstreamSocketsPerSession) {
      metrics.upstreamBusy();
      return sendError(res, 503, 'upstream_busy', retryAfter);
    }

    // Node's server has answered 100-continue already (RFC 9110 §10.1.1). Passed on, Expect would make
    // node:http send the upstream head at once, the browser's, before the header section is rewritten.
    if (req.headers.expect !== undefined) delete req.headers.expect;
    const method = req.method ?? '';
    const length = req.headers['content-length'];
    const f: Flight = {
      req,
      res,
      exchange,
      headers: upstreamHeaders(
        req.headers,
        { method, clientIp: clientAddress(req, shared.trustProxy), proto, host: publicUrl.host, upstreamHost: upstream.host },
        drop,
      ),
      path: base + exchange.upstreamPath,
      token: exchange.token,
      proof: undefined,
      hasBody: req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) > 0),
      replayable: REPLAYABLE.has(method),
      replay: false,
      renewed: false,
      nonced: false,
      options: undefined,
      phase: 'connect',
      timer: undefined,
      upstream: undefined,
      gone: false,
      failed: false,
    };
    (res as Carrier)[FLIGHT] = f;
    inFlight.set(bound, open + 1);
    // However the browser's exchange ends: its place in the bound is given back (nothing below may leak it),
    // and when it ends before its answer did, the browser went away and the upstream request is stopped.
    res.on('close', () => {
      const left = inFlight.get(bound)! - 1;
      if (left === 0) inFlight.delete(bound);
      else inFlight.set(bound, left);
      if (res.writableFinished) return;
      f.gone = true;
      clearTimeout(f.timer);
      f.upstream?.destroy();
    });
    send(f);
  };

  return { forward, close: () => agent.destroy() };
}

/** A comma-separated list's members, commas inside quoted strings (RFC 9110 §5.6.4) left alone. */
function members(value: string): string[] {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (quoted && c === '\\') i++;
    else if (c === '"') quoted = !quoted;
    else if (c === ',' && !quoted) {
      out.push(value.slice(start, i));
      start = i + 1;
    }
  }
  out.push(value.slice(start));
  return out;
}

const AUTH_PARAM = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=/;
const SCHEME = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)/;
/** The parameter's name is case-insensitive (RFC 9110 §11.2), the error code is not (RFC 6749 §5.2). */
const INVALID_TOKEN = /^[Ee][Rr][Rr][Oo][Rr]\s*=\s*(?:"invalid_token"|invalid_token)$/;
const USE_DPOP_NONCE = /^[Ee][Rr][Rr][Oo][Rr]\s*=\s*(?:"use_dpop_nonce"|use_dpop_nonce)$/;

/**
 * True when a WWW-Authenticate value holds a challenge of one of `schemes` with the error `error`. Challenges
 * and their parameters share one comma-separated list (RFC 9110 §11.6.1): a member that is not `name=value`
 * starts the next challenge.
 */
function challenged(header: string | undefined, schemes: readonly string[], error: RegExp): boolean {
  if (!header) return false;
  let scheme = '';
  for (const member of members(header)) {
    let param = member.trim();
    if (param === '') continue;
    const starts = AUTH_PARAM.test(param) ? null : SCHEME.exec(param);
    if (starts) {
      scheme = starts[1]!.toLowerCase();
      param = param.slice(starts[0].length);
    }
    if (schemes.includes(scheme) && error.test(param)) return true;
  }
  return false;
}

/**
 * True for a challenge of the scheme the token was sent with (`bearer`, or `dpop` for a DPoP-bound token) whose
 * error is invalid_token (RFC 6750 §3.1, RFC 9449 §7.1: the token expired, was revoked or is malformed).
 */
export function invalidTokenChallenge(header: string | undefined, scheme: 'bearer' | 'dpop' = 'bearer'): boolean {
  return challenged(header, [scheme], INVALID_TOKEN);
}

/** True for a DPoP challenge asking for a proof with the server's nonce (RFC 9449 §9). */
export function dpopNonceChallenge(header: string | undefined): boolean {
  return challenged(header, ['dpop'], USE_DPOP_NONCE);
}
