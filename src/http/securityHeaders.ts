/**
 * OWASP secure headers, by helmet, computed once: with Gatehouse's options helmet's headers do not depend
 * on the request (no CSP nonce), so its list is recorded at start-up and every response gets it from here,
 * Express' routes and the /api lane alike (no per-request header building on the hot path).
 * HSTS and upgrade-insecure-requests only make sense on https; on http://localhost they break the page.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet from 'helmet';
import type { Step } from './exchange';

export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

export function securityHeaders(https: boolean): HeaderList {
  const recorded: Array<[string, string]> = [];
  const recorder = {
    setHeader: (name: string, value: unknown) => void recorded.push([name, String(value)]),
    removeHeader: () => undefined,
  };
  const middleware = helmet({
    strictTransportSecurity: https,
    contentSecurityPolicy: { directives: { upgradeInsecureRequests: https ? [] : null } },
  });
  let failed: unknown;
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => (failed = err));
  if (failed !== undefined || recorded.length === 0) throw new Error('helmet produced no headers', { cause: failed });
  return recorded;
}

export function setHeaders(list: HeaderList): Step {
  return (_req, res, next) => {
    for (const [name, value] of list) res.setHeader(name, value);
    next();
  };
}
