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
import { backchannelLogout } from './backchannelLogout';
import type { Terminator } from '../session/terminator';
import type { EndedIdpSessions } from '../session/endedIdpSessions';
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
  /** Ends sessions without their cookie (back-channel logout). */
  terminator: Terminator;
  /** Logouts of an IdP session, remembered so that a login of that session still under way makes no session. */
  endedIdpSessions: EndedIdpSessions;
  draining: () => boolean;
}

/** The Express app (`/auth/*`, health, static files) and the API lane, on node:http (frontDoor.ts joins them). */
export function createApp(deps: AppDeps): { app: Express; api: ApiLane } {
  const { cfg, lifecycle } = deps;
  const { metrics } = lifecycle;
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', cfg.trustProxy > 0 ? cfg.trustProxy : false); // X-Forwarded-* only from configured hops
  app.set('etag', false);

  const logRequest = requestLog(deps.log, (req) => sessionKeys(req, lifecycle).hash);
  const secure = setHeaders(securityHeaders(cfg.secureCookies));
  const csrf = requireCsrf(cfg.publicOrigin, deps.log);
  const checkCookie = cookieGuard(lifecycle.cookies);

  const lane = createApiLane({
    routes: cfg.routes,
    forwarders: deps.forwarders,
    before: [logRequest, secure, measure(metrics)],
    guard: apiGuard,
    csrf,
    cookieGuard: checkCookie,
    loadSession: deps.sessionLoader,
    lifecycle,
    tokens: deps.tokens,
    clientTokens: deps.clientTokens,
    trustProxy: cfg.trustProxy,
    log: deps.log,
    sockets: { ...deps.sockets, publicOrigin: cfg.publicOrigin, metrics },
  });

  app.use(logRequest);
  app.use(requireOriginForm());
  app.use(secure);

  app.get('/healthz', healthz());
  app.get('/readyz', readyz({ kv: deps.kv, idp: deps.idp, draining: deps.draining }));

  app.use('/auth', noStore());
  // Anyone may start a login: one client address gets so many a minute, on every replica together.
  const rate = {
    kv: deps.kv,
    keyring: lifecycle.keyring,
    keyPrefix: cfg.keyPrefix,
    perMinute: cfg.loginRatePerMinute,
    metrics,
  };
  app.get(
    '/auth/login',
    loginRateLimit(rate, 'login'),
    login({
      idp: deps.idp,
      tx: deps.transactions,
      keyring: lifecycle.keyring,
      cookies: lifecycle.cookies,
      publicOrigin: cfg.publicOrigin,
      metrics,
    }),
    loginErrorPage(deps.log),
  );
  app.get(
    '/auth/callback',
    loginRateLimit(rate, 'callback'),
    checkCookie,
    deps.session,
    callback({
      idp: deps.idp,
      transactions: deps.transactions,
      endedIdpSessions: deps.endedIdpSessions,
      lifecycle,
      log: deps.log,
      publicOrigin: cfg.publicOrigin,
      timing: { skewSeconds: cfg.refreshSkewSeconds, marginSeconds: cfg.tokenExpiryMarginSeconds },
      absoluteMs: cfg.sessionAbsoluteSeconds * 1000,
      dpop: cfg.dpop,
    }),
  );
  app.get('/auth/session', csrf, checkCookie, deps.session, sessionInfo(lifecycle));
  app.post('/auth/logout', csrf, checkCookie, deps.session, logout({ lifecycle, idp: deps.idp, kv: deps.kv, log: deps.log }));
  app.all('/auth/logout', methodNotAllowed('POST'));
  app.post(
    '/auth/backchannel-logout',
    ...backchannelLogout({
      idp: deps.idp,
      kv: deps.kv,
      keyring: lifecycle.keyring,
      index: lifecycle.index,
      terminator: deps.terminator,
      endedIdpSessions: deps.endedIdpSessions,
      clientId: cfg.clientId,
      log: deps.log,
      now: lifecycle.now,
    }),
  );
  app.all('/auth/backchannel-logout', methodNotAllowed('POST'));

  // Where the IdP sends the browser after logout, when that is on this origin.
  const postLogout = new URL(cfg.postLogoutRedirectUri);
  if (postLogout.origin === cfg.publicOrigin) app.get(postLogout.pathname, logoutReturn({ lifecycle, kv: deps.kv }));

  // Express answers OPTIONS on a path it routes by itself (200 with Allow): Gatehouse serves no CORS, so a
  // preflight to its own paths is refused, never granted by default.
  app.options(/^\/(?:auth(?:\/|$)|healthz$|readyz$)/, methodNotAllowed('GET, POST'));
  if (cfg.staticDir) app.use(express.static(cfg.staticDir, { index: 'index.html', dotfiles: 'ignore' }));
  // No 404 here: the front door answers it, or passes the request on to a host app (frontDoor.ts).
  app.use(errorHandler(deps.log));
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
