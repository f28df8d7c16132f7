/**
 * OWASP session management "Manage Session ID as Any Other User Input": the session cookie is
 * untrusted input, checked before any store lookup. Exactly one cookie of the exact name, in the exact
 * shape express-session writes (`s:` + 43-char base64url id + `.` + 43-char signature), under 200 bytes.
 * Anything else is dropped before express-session runs and answered like a missing session (401),
 * with a clearing cookie.
 */
import type { Step } from './exchange';
import { cookieValues, dropCookie, type CookiePolicy } from './cookies';

const SIGNED_ID = /^s:[A-Za-z0-9_-]{43}\.[A-Za-z0-9+/]{43}$/;
const MAX_COOKIE_BYTES = 200;

export interface CookieState {
  /** A session cookie was sent (valid-looking or not): a 401 must clear it. */
  sent: boolean;
}

export function sessionCookieOk(raw: string): boolean {
  if (raw.length >= MAX_COOKIE_BYTES) return false;
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    return false;
  }
  return SIGNED_ID.test(value);
}

export function cookieGuard(policy: CookiePolicy): Step {
  return (req, res, next) => {
    const values = cookieValues(req, policy.sessionName);
    const state: CookieState = { sent: values.length > 0 };
    res.locals.cookie = state;
    if (values.length > 1 || (values.length === 1 && !sessionCookieOk(values[0]!))) dropCookie(req, policy.sessionName);
    next();
  };
}
