/**
 * The session rules of an API call: the live session (within its idle and absolute lifetimes), its idle
 * window slid, in res.locals.session. Required: without one, 401 JSON (never a redirect). Optional: the call
 * goes on without.
 */
import type { Step } from '../http/exchange';
import { liveSession, rejectSession, slideIdle, type Lifecycle } from './lifecycle';

export function requireSession(lifecycle: Lifecycle, required = true): Step {
  return async (req, res, next) => {
    const session = await liveSession(req, lifecycle);
    if (session) res.locals.session = await slideIdle(req, lifecycle, session);
    else if (required) return rejectSession(res, lifecycle, 'unauthenticated');
    next();
  };
}
