/**
 * The API lane, on node:http, one request's steps in order on one screen:
 *
 *   shape (400, 405) → route (404, 405) → CSRF (403) → session (401) → token (401, 503) → forward
 *
 * The route decides the session and token steps: `user` requires a session and sends its access token,
 * `optional` sends it when there is a session, `none` looks up no session at all. The CSRF rule holds on
 * every route, whatever its policy.
 *
 * A WebSocket upgrade takes the same steps, answered on its raw connection until the socket opens (a
 * ServerResponse bound to it): only a `websocket` route takes one (404 otherwise), and its CSRF rule is the
 * Origin, which must be the public origin (a browser cannot add X-CSRF to a WebSocket). Its last step
 * opens the socket instead of forwarding a request.
 */
import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { pathOf, type HttpRequest, type HttpResponse, type Step } from '../http/exchange';
import { answerError, RETRY_AFTER_SECONDS, sendError } from '../http/errors';
import { clientAddress } from '../http/clientAddress';
import type { Logger } from '../log/logger';
import { sessionKeys, type Lifecycle } from '../session/lifecycle';
import { requireSession } from '../session/requireSession';
import { answerNoToken, attachAccessToken } from './attachAccessToken';
import type { TokenService } from '../tokens/refresh';
import { upstreamToken } from '../tokens/dpop';
import type { ClientTokens } from '../tokens/clientTokens';
import type { Exchange, Forwarder } from './forward';
import { RouteTable, type Route, type TokenPolicy } from './routes';
import type { Metrics } from '../health/metrics';
import type { LiveSockets } from './websocket/liveSockets';
import type { SocketForwarder } from './websocket/forwardSocket';

export interface LaneDeps {
  routes: readonly Route[];
  /** Each route's forwarder. */
  forwarders: ReadonlyMap<Route, Forwarder>;
  /** Steps shared with the Express side: the request log line, the secure headers, the /api metrics. */
  before: readonly Step[];
  /** Path shape: TRACE/CONNECT, paths that would leave the base, framing; leaves res.locals.upstreamPath (below /api). */
  guard: Step;
  csrf: Step;
  cookieGuard: Step;
  /** Loads the session named by the cookie, when there is one. */
  loadSession: Step;
  lifecycle: Lifecycle;
  tokens: TokenService;
  /** The gateway's own tokens, for `client` routes. */
  clientTokens: ClientTokens;
  trustProxy: number;
  log: Logger;
  /** The WebSocket routes' forwarders, the open sockets, and what their upgrades are checked against. */
  sockets: {
    forwarders: ReadonlyMap<Route, SocketForwarder>;
    live: LiveSockets;
    publicOrigin: string;
    metrics: Metrics;
  };
}

export interface ApiLane {
  request(req: IncomingMessage, res: ServerResponse): void;
  /** An `upgrade` event of the server (for a path under /api). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** What an upgrade's status says about why it was refused (the label of the refusals metric). */
const REFUSAL: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthenticated',
  403: 'csrf',
  404: 'not_found',
  405: 'method_not_allowed',
  429: 'too_many_sockets',
  500: 'internal_error',
  502: 'bad_gateway',
  503: 'unavailable',
  504: 'upstream_timeout',
};

export function createApiLane(d: LaneDeps): ApiLane {
  const table = new RouteTable(d.routes);
  const { lifecycle } = d;

  const route: Step = (_req, res, next) => {
    const match = table.match(res.locals.upstreamPath!);
    if (!match) return sendError(res, 404, 'not_found');
    // The upstream's path starts after the route's: a leading `@` there could read as credentials in a URL
    // built by string concatenation upstream (the guard checks it only right below /api).
    if (/^\/(?:@|%40)/i.test(match.rest)) return sendError(res, 400, 'bad_request');
    res.locals.route = match;
    next();
  };
  const methods: Step = (req, res, next) => {
    const allowed = res.locals.route!.route.methods;
    if (allowed && !allowed.has(req.method ?? '')) {
      res.setHeader('Allow', [...allowed].join(', '));
      return sendError(res, 405, 'method_not_allowed');
    }
    next();
  };
  const tokenIfSession: Step = (req, res, next) => (res.locals.session ? attach(req, res, next) : next());
  const attach = attachAccessToken(lifecycle, d.tokens);
  // The gateway's own token (client credentials), the same for every caller: no session is looked up.
  const clientToken: Step = async (_req, res, next) => {
    const result = await d.clientTokens.accessToken(res.locals.route!.route.audience!);
    if (result.kind !== 'bearer') return sendError(res, 503, 'token_refresh_unavailable', { 'Retry-After': String(RETRY_AFTER_SECONDS) });
    res.locals.token = await upstreamToken(result.accessToken, result.dpop);
    next();
  };

  const forward: Step = (req, res) => {
    const { route: r, rest } = res.locals.route!;
    const session = res.locals.session;
    const token = res.locals.token;
    const keys = session ? sessionKeys(req, lifecycle) : undefined;
    const exchange: Exchange = {
      upstreamPath: rest,
      bound: keys?.hash ?? `address:${clientAddress(req, d.trustProxy) ?? ''}`,
      ...(token !== undefined && { token }),
      ...(token !== undefined &&
        session &&
        keys && {
          // The upstream refused the token (revoked early, replaced at the IdP): one replacement, or this
          // request's answer (401 when the session is over, 503 while the IdP cannot help).
          retryWithNewToken: async () => {
            const result = await d.tokens.replacement(keys, session, token.accessToken, r.audience);
            if (result.kind === 'bearer') return upstreamToken(result.accessToken, result.dpop);
            await answerNoToken(req, res, lifecycle, result);
            return undefined;
          },
        }),
    };
    d.forwarders.get(r)!.forward(req, res, exchange);
  };

  // The route's token policy decides the rest, once the shape, route and CSRF steps have passed.
  const tails: Record<TokenPolicy, Step> = {
    user: chain(d.cookieGuard, d.loadSession, requireSession(lifecycle), attach, forward),
    optional: chain(d.cookieGuard, d.loadSession, requireSession(lifecycle, false), tokenIfSession, forward),
    none: forward,
    client: chain(clientToken, forward),
  };
  const lane = chain(...d.before, d.guard, route, methods, d.csrf, (req, res, next) =>
    tails[res.locals.route!.route.token](req, res, next),
  );

  // WebSocket upgrades.
  const ws = d.sockets;
  const websocketRoute: Step = (req, res, next) => {
    if (!res.locals.route!.route.websocket) return sendError(res, 404, 'not_found');
    // RFC 6455 §4.1: a WebSocket handshake is a GET asking to upgrade to websocket.
    if (req.method !== 'GET' || !/^websocket$/i.test(req.headers.upgrade ?? '')) return sendError(res, 400, 'bad_request');
    next();
  };
  // Cross-site WebSocket hijacking: browsers send cookies with a cross-site handshake (SameSite aside) and
  // let no page add a header to it, so the Origin, which they always send and no page can set, must be ours.
  const sameOrigin: Step = (req, res, next) => {
    const origin = req.headers.origin;
    if (origin === ws.publicOrigin) return next();
    const reason = origin === undefined ? 'missing Origin' : 'foreign Origin';
    d.log.warn({ event: 'csrf_rejected', reason, method: req.method, path: pathOf(req.url) }, 'WebSocket upgrade refused: CSRF');
    res.setHeader('Cache-Control', 'no-store');
    sendError(res, 403, 'csrf');
  };
  const openSocket: Step = (req, res) => {
    const { route: r, rest } = res.locals.route!;
    const session = res.locals.session;
    const keys = session ? sessionKeys(req, lifecycle) : undefined;
    // While session changes cannot be received, a socket of a session could not be closed when it ends.
    if (keys && !ws.live.checkable) return sendError(res, 503, 'session_store_unavailable', { 'Retry-After': String(RETRY_AFTER_SECONDS) });
    const ticket = ws.live.reserve(session && keys && { req, keys, session });
    if (!ticket) return sendError(res, 429, 'too_many_sockets');
    const { socket, head } = res.locals.upgrade!;
    ws.forwarders.get(r)!.open(req, res, socket, head, {
      upstreamPath: rest,
      ticket,
      ...(res.locals.token !== undefined && { token: res.locals.token }),
      ...(keys && { session: keys.hash }),
    });
  };
  const socketTails: Record<TokenPolicy, Step> = {
    user: chain(d.cookieGuard, d.loadSession, requireSession(lifecycle), attach, openSocket),
    optional: chain(d.cookieGuard, d.loadSession, requireSession(lifecycle, false), tokenIfSession, openSocket),
    none: openSocket,
    client: chain(clientToken, openSocket),
  };
  const upgradeLane = chain(...d.before, d.guard, route, websocketRoute, methods, sameOrigin, (req, res, next) =>
    socketTails[res.locals.route!.route.token](req, res, next),
  );

  return {
    request(req, res) {
      (res as HttpResponse).locals ??= {};
      void lane(req as HttpRequest, res as HttpResponse, (err) =>
        err === undefined ? sendError(res, 404, 'not_found') : answerError(d.log, err, req, res),
      );
    },
    upgrade(req, socket, head) {
      const res = upgradeAnswer(req, socket as Socket, head);
      res.on('finish', () => ws.metrics.upgradeRefused(REFUSAL[res.statusCode] ?? String(res.statusCode)));
      void upgradeLane(req as HttpRequest, res, (err) =>
        err === undefined ? sendError(res, 404, 'not_found') : answerError(d.log, err, req, res),
      );
    },
  };
}

/**
 * The answer to an upgrade while there is no socket: a ServerResponse bound to the raw connection, so that
 * every step answers a refusal as it would an HTTP request (then the connection closes).
 */
export function upgradeAnswer(req: IncomingMessage, socket: Socket, head: Buffer): HttpResponse {
  const res = new ServerResponse(req) as HttpResponse;
  res.locals = { upgrade: { socket, head } };
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  socket.on('error', () => socket.destroy()); // a browser gone mid-answer is nobody's error
  res.on('finish', () => socket.destroySoon());
  return res;
}

/** Runs steps in order as one, as Express would: an error, thrown or a rejected promise, ends it. */
function chain(...steps: Step[]): Step {
  return (req, res, done) => {
    let i = 0;
    const next = (err?: unknown): void => {
      if (err) return done(err);
      const step = steps[i++];
      if (!step) return done();
      try {
        const result = step(req, res, next);
        if (result instanceof Promise) result.catch((e: unknown) => done(e ?? new Error('middleware rejected')));
      } catch (e) {
        done(e);
      }
    };
    next();
  };
}
