/**
 * The cookie rules in one place. express-session writes the session cookie when a session is created
 * (login); everything else here: the login-transaction cookie and every clearing cookie.
 *
 * RFC 6265bis §4.1.3.2 / draft-ietf-httpbis-layered-cookies: a `__Host-` cookie is only accepted with
 * Secure, Path=/ and no Domain, and so is its deletion; a bare clear is ignored by browsers, so a
 * clearing cookie repeats every attribute the cookie was set with (STANDARDS.md R52).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config/schema';

export interface CookiePolicy {
  readonly sessionName: string;
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

/** Login transactions last at most ten minutes (R5: Max-Age <= 600). */
export const TX_MAX_AGE_SECONDS = 600;

function serialize(name: string, value: string, attrs: string[]): string {
  return [`${name}=${value}`, 'Path=/', 'HttpOnly', ...attrs].join('; ');
}

/** R5: the transaction cookie must survive the cross-site callback navigation, so SameSite=Lax, never Strict. */
export function setTxCookie(res: ServerResponse, p: CookiePolicy, value: string): void {
  const attrs = [`Max-Age=${TX_MAX_AGE_SECONDS}`, 'SameSite=Lax'];
  if (p.secure) attrs.push('Secure');
  res.appendHeader('Set-Cookie', serialize(p.txName, value, attrs));
}

export function clearSessionCookie(res: ServerResponse, p: CookiePolicy): void {
  const attrs = ['Max-Age=0', 'Expires=Thu, 01 Jan 1970 00:00:00 GMT', `SameSite=${p.sameSite}`];
  if (p.secure) attrs.push('Secure');
  res.appendHeader('Set-Cookie', serialize(p.sessionName, '', attrs));
}

/** Every value sent under exactly `name` (case-sensitive, R24), raw. */
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
