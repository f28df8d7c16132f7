/** /healthz: the process runs. /readyz: the store answers and IdP metadata is loaded (Kubernetes probes). */
import type { RequestHandler } from 'express';
import type { Kv } from '../store/kv';
import type { Idp } from '../idp/idp';

export function healthz(): RequestHandler {
  return (_req, res) => {
    res.set('Cache-Control', 'no-store').json({ status: 'ok' });
  };
}

export function readyz(deps: { kv: Kv; idp: Idp; draining: () => boolean }): RequestHandler {
  return async (_req, res) => {
    const store = await deps.kv.ping().then(
      () => true,
      () => false,
    );
    const idp = deps.idp.ready();
    if (!idp) void deps.idp.metadata().catch(() => undefined);
    const ok = store && idp && !deps.draining();
    res
      .status(ok ? 200 : 503)
      .set('Cache-Control', 'no-store')
      .json({
        status: ok ? 'ok' : 'unavailable',
        checks: { store: store ? 'ok' : 'down', idp: idp ? 'ok' : 'down', draining: deps.draining() },
      });
  };
}
