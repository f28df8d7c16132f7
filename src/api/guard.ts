/**
 * The first /api step that looks at the request itself: paths that would leave the upstream base (pathGuard.ts),
 * TRACE and CONNECT, and smuggling-shaped headers are refused before any other step runs; what passes leaves
 * its upstream-relative path and query in res.locals.upstreamPath.
 */
import type { Step } from '../http/exchange';
import { sendError } from '../http/errors';
import { upstreamPath } from './pathGuard';
import { framingNamedInConnection } from './headers';

export const apiGuard: Step = (req, res, next) => {
  if (req.method === 'TRACE' || req.method === 'CONNECT') {
    res.setHeader('Allow', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
    return sendError(res, 405, 'method_not_allowed');
  }
  const path = upstreamPath(req.url ?? '');
  if (path === undefined) return sendError(res, 400, 'bad_request');
  if (framingNamedInConnection(req.headers)) {
    // A request shaped to desynchronise proxies: its connection is not reused for another request.
    res.shouldKeepAlive = false;
    return sendError(res, 400, 'bad_request');
  }
  res.locals.upstreamPath = path;
  next();
};
