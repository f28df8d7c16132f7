/**
 * The API lane, on node:http, one request's steps in order on one screen:
 *
 *   shape (400, 405) → route (404, 405) → CSRF (403) → session (401) → token (401, 503) → forward
 *
 * The route decides the session and token steps: `user` requires a session and sends its access token,
 * `optional` sends it when there is a session, `none` looks up no session at all. The CSRF rule holds on
 * every route, whatever its policy.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HttpRequest, HttpResponse, Step } from '../http/exchange';
import { answerError, sendError } from '../http/errors';
import { clientAddress } from '../http/clientAddress';
import type { Logger } from '../log/logger';
import { sessionKeys, type Lifecycle } from '../session/lifecycle';
import { requireSession } from '../session/requireSession';
import { answerNoToken, attachAccessToken } from './attachAccessToken';
import type { TokenService } from '../tokens/refresh';
import type { Exchange, Forwarder } from './forward';
import { RouteTable, type Route, type TokenPolicy } from './routes';

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
  trustProxy: number;
  log: Logger;
}

export function createApiLane(d: LaneDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const table = new RouteTable(d.routes);
  const lc = d.lifecycle;

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
  const attach = attachAccessToken(lc, d.tokens);

  const forward: Step = (req, res) => {
    const { route: r, rest } = res.locals.route!;
    const gh = res.locals.session;
    const accessToken = res.locals.accessToken;
    const keys = gh ? sessionKeys(req, lc) : undefined;
    const exchange: Exchange = {
      upstreamPath: rest,
      bound: keys?.hash ?? `address:${clientAddress(req, d.trustProxy) ?? ''}`,
      ...(accessToken !== undefined && { accessToken }),
      ...(accessToken !== undefined &&
        gh &&
        keys && {
          // The upstream refused the token (revoked early, replaced at the IdP): one replacement, or this
          // request's answer (401 when the session is over, 503 while the IdP cannot help).
          retryWithNewToken: async () => {
            const result = await d.tokens.replacement(keys, gh, accessToken);
            if (result.kind === 'bearer') return result.accessToken;
            await answerNoToken(req, res, lc, result);
            return undefined;
          },
        }),
    };
    d.forwarders.get(r)!.forward(req, res, exchange);
  };

  // The route's token policy decides the rest, once the shape, route and CSRF steps have passed.
  const tails: Record<TokenPolicy, Step> = {
    user: chain(d.cookieGuard, d.loadSession, requireSession(lc), attach, forward),
    optional: chain(d.cookieGuard, d.loadSession, requireSession(lc, false), tokenIfSession, forward),
    none: forward,
  };
  const lane = chain(...d.before, d.guard, route, methods, d.csrf, (req, res, next) =>
    tails[res.locals.route!.route.token](req, res, next),
  );

  return (req, res) => {
    (res as HttpResponse).locals ??= {};
    void lane(req as HttpRequest, res as HttpResponse, (err) =>
      err === undefined ? sendError(res, 404, 'not_found') : answerError(d.log, err, req, res),
    );
  };
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
