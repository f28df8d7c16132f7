/**
 * draft-ietf-oauth-browser-based-apps §6.1.3.3.2: a custom header a cross-site form or a simple request
 * cannot send, required on EVERY cookie-authenticated request (GET too), plus OWASP CSRF Fetch Metadata
 * and Origin checks: anything but same-origin is refused. SameSite alone does not stop same-site
 * siblings (§6.1.3.3.1), so `Sec-Fetch-Site: same-site` is refused as well.
 * Every refusal is logged as an audit event (`csrf_rejected`), with the reason (never a header's full value).
 */
import { pathOf, type Step } from './exchange';
import { sendError } from './errors';
import type { Logger } from '../log/logger';

export function requireCsrf(publicOrigin: string, log: Logger): Step {
  return (req, res, next) => {
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    const reason =
      req.headers['x-csrf'] !== '1'
        ? 'missing X-CSRF: 1'
        : site !== undefined && site !== 'same-origin'
          ? 'cross-site Sec-Fetch-Site'
          : origin !== undefined && origin !== publicOrigin
            ? 'foreign Origin'
            : undefined;
    if (reason === undefined) return next();
    log.warn({ event: 'csrf_rejected', reason, method: req.method, path: pathOf(req.url) }, 'request refused: CSRF');
    res.setHeader('Cache-Control', 'no-store');
    sendError(res, 403, 'csrf');
  };
}
