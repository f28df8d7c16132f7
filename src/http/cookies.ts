/**
 * The cookie rules in one place. express-session writes the session cookie when a session is created
 * (login); everything else here: the login-transaction cookies and every clearing cookie.
 *
 * RFC 6265bis §4.1.3.2 / draft-ietf-httpbis-layered-cookies: a `__Host-` cookie is only accepted with
 * Secure, Path=/ and no Domain, and so is its deletion; a bare clear is ignored by browsers, so a
 * clearing cookie repeats every attribute the cookie was set with.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config/schema';

export interface CookiePolicy {
  readonly sessionName: string;
  /** Prefix of the login-transaction cookies: each login has its own, `<txName>-<id>` (txCookieName). */
  readonly txName: string;
  readonly secure: boolean;
  readonly sameSite: 'Strict' | 'Lax';
}

export function cookiePolicy(cfg: Config): CookiePolicy {
  return {
    sessionName: cfg.secureCookies ? '__Host-Http-gatehouse' : 'gatehouse',
    txName: cfg.secureCookies ? '__Host-gatehouse-tx' : 'gatehouse-tx',
    secure: cfg.secureCookies,
    sameSite: cfg.cookieSameSite === 'lax' ? 'Lax' : 'Strict',
  };
}

/** Login transactions last at most ten minutes: the cookie's Max-Age and the record's TTL. */
export const TX_MAX_AGE_SECONDS = 600;

/** Login-transaction cookies one browser keeps at once; a new login past it drops the oldest. */
export const TX_COOKIES_MAX = 4;

function serialize(name: string, value: string, attrs: string[]): string {
  return [`${name}=${value}`, 'Path=/', 'HttpOnly', ...attrs].join('; ');
}

const TX_ID = /^[A-Za-z0-9_-]{16}$/;

/**
 * Each login transaction has a cookie of its own, named after its `state` (which the callback carries), so
 * two tabs' logins never overwrite each other's cookie and the callback clears exactly its own. The name
 * holds a hash of the state, never the state.
 */
export function txCookieName(policy: CookiePolicy, state: string): string {
  return `${policy.txName}-${createHash('sha256').update(state).digest('base64url').slice(0, 16)}`;
}

/** The transaction cookie must survive the cross-site callback navigation, so SameSite=Lax, never Strict. */
export function setTxCookie(res: ServerResponse, policy: CookiePolicy, name: string, value: string): void {
  res.appendHeader('Set-Cookie', serialize(name, value, [`Max-Age=${TX_MAX_AGE_SECONDS}`, ...txAttrs(policy)]));
}

export function clearTxCookie(res: ServerResponse, policy: CookiePolicy, name: string): void {
  res.appendHeader('Set-Cookie', serialize(name, '', ['Max-Age=0', 'Expires=Thu, 01 Jan 1970 00:00:00 GMT', ...txAttrs(policy)]));
}

function txAttrs(policy: CookiePolicy): string[] {
  return policy.secure ? ['SameSite=Lax', 'Secure'] : ['SameSite=Lax'];
}

/**
 * The names of the login-transaction cookies the browser sent, in the order it sent them: oldest first
 * (RFC 6265 §5.4: cookies with earlier creation times are listed first).
 */
export function txCookieNames(req: IncomingMessage, policy: CookiePolicy): string[] {
  const header = req.headers.cookie;
  if (!header) return [];
  const out = new Set<string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? '' : part.slice(0, eq)).trim();
    if (name.startsWith(`${policy.txName}-`) && TX_ID.test(name.slice(policy.txName.length + 1))) out.add(name);
  }
  return [...out];
}

export function clearSessionCookie(res: ServerResponse, policy: CookiePolicy): void {
  const attrs = ['Max-Age=0', 'Expires=Thu, 01 Jan 1970 00:00:00 GMT', `SameSite=${policy.sameSite}`];
  if (policy.secure) attrs.push('Secure');
  res.appendHeader('Set-Cookie', serialize(policy.sessionName, '', attrs));
}

/** Every value sent under exactly `name` (case-sensitive, as browsers compare names), raw. */
export function cookieValues(req: IncomingMessage, name: string): string[] {
  const header = req.headers.cookie;
  if (!header) return [];
  const out: string[] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) out.push(part.slice(eq + 1).trim());
  }
  return out;
}

/** Removes every `name=` pair from the Cookie header, so express-session never sees a rejected value. */
export function dropCookie(req: IncomingMessage, name: string): void {
  const header = req.headers.cookie;
  if (!header) return;
  const kept = header.split(';').filter((part) => {
    const eq = part.indexOf('=');
    return eq < 0 || part.slice(0, eq).trim() !== name;
  });
  if (kept.length) req.headers.cookie = kept.join(';');
  else delete req.headers.cookie;
}
