/**
 * The whole request pipeline, in order, on one screen: cookie → session → token vault → refresh → proxy.
 *
 * The API lane, the hot path, runs on node:http directly and never enters Express (Express' per-request
 * work, its router and the prototype swap of every request and response, cost more than the session, token
 * and proxy work together). Its steps are written against node:http (http/exchange.ts) and are the same
 * ones /auth uses where they overlap. The front door (frontDoor.ts) sends each request to one or the other.
 */
import express, { type Express, type RequestHandler } from 'express';
import type { Config } from '../config/schema';
import type { Logger } from '../log/logger';
import type { Kv } from '../store/kv';
import { cookieGuard } from '../http/cookieGuard';
import type { CookiePolicy } from '../http/cookies';
import { requireCsrf } from '../http/csrf';
import { requestLog } from '../http/requestLog';
import { errorHandler, sendError } from '../http/errors';
import type { Step } from '../http/exchange';
import { securityHeaders, setHeaders } from '../http/securityHeaders';
import { noStore, requireOriginForm } from '../http/requestShape';
import { sessionKeys, type Lifecycle } from '../session/lifecycle';
import type { Idp } from '../idp/idp';
import type { LoginTransactions } from './loginTx';
import { login, loginErrorPage, loginRateLimit } from './login';
import { callback } from './callback';
import { sessionInfo } from './sessionInfo';
import { logout, logoutReturn } from './logout';
import { backchannelLogout, type BackchannelDeps } from './backchannelLogout';
import type { TokenService } from '../tokens/refresh';
import type { ClientTokens } from '../tokens/clientTokens';
import { apiGuard } from '../api/guard';
import type { Forwarder } from '../api/forward';
import { createApiLane, type ApiLane } from '../api/lane';
import type { SocketForwarder } from '../api/websocket/forwardSocket';
import type { LiveSockets } from '../api/websocket/liveSockets';
import type { Route } from '../api/routes';
import { healthz, readyz } from '../health/health';
import type { Metrics } from '../health/metrics';

export interface AppDeps {
  cfg: Config;
  log: Logger;
  kv: Kv;
  idp: Idp;
  lifecycle: Lifecycle;
  cookies: CookiePolicy;
  transactions: LoginTransactions;
  tokens: TokenService;
  clientTokens: ClientTokens;
  /** Each route's forwarder (api/forward.ts). */
  forwarders: ReadonlyMap<Route, Forwarder>;
  /** The WebSocket routes' forwarders and the open sockets (api/websocket/). */
  sockets: { forwarders: ReadonlyMap<Route, SocketForwarder>; live: LiveSockets };
  session: RequestHandler;
  /** The read-only session loader of /api (api/sessionLoader.ts). */
  sessionLoader: Step;
  metrics: Metrics;
  backchannel: BackchannelDeps;
  draining: () => boolean;
  now: () => number;
}

/** The Express app (`/auth/*`, health, static files) and the API lane, on node:http (frontDoor.ts joins them). */
export function createApp(d: AppDeps): { app: Express; api: ApiLane } {
  const { cfg, lifecycle: lc } = d;
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', cfg.trustProxy > 0 ? cfg.trustProxy : false); // X-Forwarded-* only from configured hops
  app.set('etag', false);

  const logRequest = requestLog(d.log, (req) => sessionKeys(req, lc).hash);
  const secure = setHeaders(securityHeaders(cfg.secureCookies));
  const csrf = requireCsrf(cfg.publicOrigin, d.log);
  const cookies = cookieGuard(d.cookies);

  const lane = createApiLane({
    routes: cfg.routes,
    forwarders: d.forwarders,
    before: [logRequest, secure, measure(d.metrics)],
    guard: apiGuard,
    csrf,
    cookieGuard: cookies,
    loadSession: d.sessionLoader,
    lifecycle: lc,
    tokens: d.tokens,
    clientTokens: d.clientTokens,
    trustProxy: cfg.trustProxy,
    log: d.log,
    sockets: { ...d.sockets, publicOrigin: cfg.publicOrigin, metrics: d.metrics },
  });

  app.use(logRequest);
  app.use(requireOriginForm());
  app.use(secure);

  app.get('/healthz', healthz());
  app.get('/readyz', readyz({ kv: d.kv, idp: d.idp, draining: d.draining }));

  app.use('/auth', noStore());
  // Anyone may start a login: one client address gets so many a minute, on every replica together.
  const rate = { kv: d.kv, keyring: lc.keyring, keyPrefix: cfg.keyPrefix, perMinute: cfg.loginRatePerMinute, metrics: d.metrics };
  app.get(
    '/auth/login',
    loginRateLimit(rate, 'login'),
    login({ idp: d.idp, tx: d.transactions, keyring: lc.keyring, cookies: d.cookies, publicOrigin: cfg.publicOrigin, metrics: d.metrics }),
    loginErrorPage(d.log),
  );
  app.get(
    '/auth/callback',
    loginRateLimit(rate, 'callback'),
    cookies,
    d.session,
    callback({
      idp: d.idp,
      tx: d.transactions,
      endedIdpSessions: d.backchannel.endedIdpSessions,
      keyring: lc.keyring,
      vault: lc.vault,
      lifecycle: lc,
      cookies: d.cookies,
      log: d.log,
      publicOrigin: cfg.publicOrigin,
      secureCookies: cfg.secureCookies,
      timing: { skewSeconds: cfg.refreshSkewSeconds, marginSeconds: cfg.tokenExpiryMarginSeconds },
      absoluteMs: cfg.sessionAbsoluteSeconds * 1000,
      dpop: cfg.dpop,
      now: d.now,
    }),
  );
  app.get('/auth/session', csrf, cookies, d.session, sessionInfo(lc));
  app.post('/auth/logout', csrf, cookies, d.session, logout({ lifecycle: lc, idp: d.idp, kv: d.kv, log: d.log }));
  app.all('/auth/logout', methodNotAllowed('POST'));
  app.post('/auth/backchannel-logout', ...backchannelLogout(d.backchannel));
  app.all('/auth/backchannel-logout', methodNotAllowed('POST'));

  // Where the IdP sends the browser after logout, when that is on this origin.
  const postLogout = new URL(cfg.postLogoutRedirectUri);
  if (postLogout.origin === cfg.publicOrigin) app.get(postLogout.pathname, logoutReturn({ lifecycle: lc, kv: d.kv }));

  // Express answers OPTIONS on a path it routes by itself (200 with Allow): Gatehouse serves no CORS, so a
  // preflight to its own paths is refused, never granted by default.
  app.options(/^\/(?:auth(?:\/|$)|healthz$|readyz$)/, methodNotAllowed('GET, POST'));
  if (cfg.staticDir) app.use(express.static(cfg.staticDir, { index: 'index.html', dotfiles: 'ignore' }));
  // No 404 here: the front door answers it, or passes the request on to a host app (frontDoor.ts).
  app.use(errorHandler(d.log));
  return { app, api: lane };
}

/** Every /api answer, whoever gives it (upstream, refresh, session, CSRF), by status class and latency. */
function measure(metrics: Metrics): Step {
  return (_req, res, next) => {
    const start = performance.now();
    res.on('finish', () => metrics.proxied(res.statusCode, (performance.now() - start) / 1000));
    next();
  };
}

function methodNotAllowed(allow: string): RequestHandler {
  return (_req, res) => {
    res.set('Allow', allow);
    sendError(res, 405, 'method_not_allowed');
  };
}
