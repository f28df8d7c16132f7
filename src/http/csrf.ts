/**
 * draft-ietf-oauth-browser-based-apps §6.1.3.3.2: a custom header a cross-site form or a simple request
 * cannot send, required on EVERY cookie-authenticated request (GET too), plus OWASP CSRF Fetch Metadata
 * and Origin checks: anything but same-origin is refused. SameSite alone does not stop same-site
 * siblings (§6.1.3.3.1), so `Sec-Fetch-Site: same-site` is refused as well.
 */
import type { RequestHandler } from 'express';
import { sendError } from './errors';

export function requireCsrf(publicOrigin: string): RequestHandler {
  return (req, res, next) => {
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    if (
      req.headers['x-csrf'] !== '1' ||
      (site !== undefined && site !== 'same-origin') ||
      (origin !== undefined && origin !== publicOrigin)
    ) {
      res.set('Cache-Control', 'no-store');
      sendError(res, 403, 'csrf');
      return;
    }
    next();
  };
}
