/**
 * The session rules of an API call: the live session (within its idle and absolute lifetimes), its idle
 * window slid, in res.locals.session. Required: without one, 401 JSON (never a redirect). Optional: the call
 * goes on without.
 */
import type { Step } from '../http/exchange';
import { liveSession, rejectSession, slideIdle, type Lifecycle } from './lifecycle';

export function requireSession(lc: Lifecycle, required = true): Step {
  return async (req, res, next) => {
    const gh = await liveSession(req, lc);
    if (gh) res.locals.session = await slideIdle(req, lc, gh);
    else if (required) return rejectSession(res, lc, 'unauthenticated');
    next();
  };
}
