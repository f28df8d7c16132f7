/** R23, R25, R26, R28: an /api request needs a live session; otherwise 401 JSON (never a redirect). */
import type { Step } from '../http/exchange';
import { liveSession, rejectSession, slideIdle, type Lifecycle } from './lifecycle';

export function requireSession(lc: Lifecycle): Step {
  return async (req, res, next) => {
    const gh = await liveSession(req, lc);
    if (!gh) return rejectSession(res, lc, 'unauthenticated');
    res.locals.session = await slideIdle(req, lc, gh);
    next();
  };
}
