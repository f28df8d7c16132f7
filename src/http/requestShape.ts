/**
 * An absolute-form request target (RFC 9112 §3.2.2: `GET http://evil.example/api/x`) is refused before
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

/** Every /auth/* response, errors included, is `Cache-Control: no-store`: no cache may keep a session's answers. */
export function noStore(): RequestHandler {
  return (_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  };
}
