/**
 * R49 / DESIGN.md: an absolute-form request target (`GET http://evil.example/api/x`) is refused before
 * routing, so nothing downstream ever builds a URL from a host the browser chose.
 */
import type { RequestHandler } from 'express';
import { sendError } from './errors';

export function requireOriginForm(): RequestHandler {
  return (req, res, next) => {
    if (!req.url.startsWith('/')) return sendError(res, 400, 'bad_request');
    next();
  };
}

/** R63: every /auth/* response, errors included, is `Cache-Control: no-store`. */
export function noStore(): RequestHandler {
  return (_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  };
}
