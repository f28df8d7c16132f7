/**
 * One structured line per request, written when the response ends: request id (also sent back as
 * X-Request-Id), method, route, status, duration, and the session as its storage hash. Never the URL's
 * query, a cookie, a header or a token (any of them may carry a credential). No work at all when the level is off.
 */
import { randomUUID } from 'node:crypto';
import { pathOf, type HttpRequest, type Step } from './exchange';
import type { Logger } from '../log/logger';

/** The route a request matched, as a small closed set (never the raw path, which may carry identifiers). */
function routeOf(path: string): string {
  if (path.startsWith('/api/') || path === '/api') return '/api';
  if (path.startsWith('/auth/')) return path.split('?')[0]!;
  if (path === '/healthz' || path === '/readyz') return path;
  return 'other';
}

export function requestLog(log: Logger, sessionHash: (req: HttpRequest) => string): Step {
  return (req, res, next) => {
    if (!log.isLevelEnabled('info')) return next();
    const start = performance.now();
    const id = randomUUID();
    const route = routeOf(pathOf(req.url)); // now: Express rewrites req.url inside a mounted router
    res.setHeader('X-Request-Id', id);
    res.on('finish', () => {
      log.info(
        {
          event: 'request',
          requestId: id,
          method: req.method,
          route,
          status: res.statusCode,
          ms: Math.round((performance.now() - start) * 10) / 10,
          ...(req.session?.gatehouse && { session: sessionHash(req) }),
        },
        'request',
      );
    });
    next();
  };
}
