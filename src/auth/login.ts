/**
 * GET /auth/login: authorization code flow with PKCE S256 (RFC 7636) and fresh state and nonce (256 bits
 * each); nothing in the request can steer a protocol parameter but `prompt` (one of three values), and
 * `returnTo`, parsed to a same-origin path (returnTo.ts).
 *
 * Nobody needs to be logged in to call it, and each call stores a record for ten minutes, so what one
 * client address may start is rate limited (loginRateLimit, also on /auth/callback), and what all of them
 * together may keep in flight is capped (loginTx.ts). A browser navigation refused here gets a small page
 * with a retry link instead of JSON (loginErrorPage).
 */
import type { ErrorRequestHandler, RequestHandler } from 'express';
import { randomId } from '../crypto/seal';
import { clearTxCookie, setTxCookie, txCookieName, txCookieNames, TX_COOKIES_MAX, type CookiePolicy } from '../http/cookies';
import { GatewayError, MESSAGES, RETRY_AFTER_SECONDS, type ErrorCode } from '../http/errors';
import { StoreUnavailableError, type Kv } from '../store/kv';
import type { Metrics } from '../health/metrics';
import type { Logger } from '../log/logger';
import type { Keyring } from '../session/keyring';
import type { Idp, Prompt } from '../idp/idp';
import type { LoginTransactions } from './loginTx';
import { HOME, parseReturnTo } from './returnTo';

/**
 * `prompt` the SPA may pass (OIDC Core §3.1.2.1): `none`, a silent login that shows the user nothing (no
 * session when the IdP would need them); `login` and `select_account` pass through. Anything else is
 * refused rather than passed on: no other protocol parameter can be steered from the browser.
 */
const PROMPTS = new Set<string>(['none', 'login', 'select_account']);

/** How long a client refused for too many logins in flight is asked to wait (they free up as logins finish). */
const IN_FLIGHT_RETRY_SECONDS = 30;

export function login(deps: {
  idp: Idp;
  tx: LoginTransactions;
  keyring: Keyring;
  cookies: CookiePolicy;
  publicOrigin: string;
  metrics: Metrics;
}): RequestHandler {
  return async (req, res) => {
    const prompt = req.query.prompt;
    if (prompt !== undefined && !PROMPTS.has(prompt as string)) throw new GatewayError('bad_request', 400);
    const checks = { state: randomId(), nonce: randomId(), codeVerifier: randomId() };
    const url = await deps.idp.authorizationUrl(checks, prompt as Prompt | undefined);
    // Login CSRF (RFC 6749 §10.12): the binding is new at every login, never a value the browser brought,
    // so a tx cookie planted in the browser beforehand binds no transaction.
    const binding = randomId();
    const saved = await deps.tx.save(checks.state, {
      codeVerifier: checks.codeVerifier,
      nonce: checks.nonce,
      returnTo: parseReturnTo(req.query.returnTo, deps.publicOrigin) ?? HOME,
      binding: deps.keyring.fingerprint(binding),
      silent: prompt === 'none',
    });
    if (!saved) {
      deps.metrics.loginRefused('in_flight');
      throw new GatewayError('too_many_requests', 503, { headers: { 'Retry-After': String(IN_FLIGHT_RETRY_SECONDS) } });
    }
    // A few logins in flight per browser: past that the oldest cookies are cleared (those logins fail).
    const existing = txCookieNames(req, deps.cookies);
    for (const name of existing.slice(0, Math.max(0, existing.length - TX_COOKIES_MAX + 1))) clearTxCookie(res, deps.cookies, name);
    setTxCookie(res, deps.cookies, txCookieName(deps.cookies, checks.state), binding);
    res.redirect(302, url.href);
  };
}

const WINDOW_MS = 60_000;

/**
 * At most `perMinute` requests a minute from one client address to one route (0 = no limit), counted in the
 * store, so every replica shares the count; past it 429 with Retry-After. The address is Express' req.ip,
 * which honours GATEHOUSE_TRUST_PROXY; the store sees only a keyed hash of it, under a key that lives one
 * window.
 */
export function loginRateLimit(
  d: { kv: Kv; keyring: Keyring; keyPrefix: string; perMinute: number; metrics: Metrics },
  route: 'login' | 'callback',
): RequestHandler {
  if (d.perMinute <= 0) return (_req, _res, next) => next();
  return async (req, _res, next) => {
    const key = `${d.keyPrefix}rl:${d.keyring.fingerprint(`rate:${route}:${addressGroup(req.ip ?? '')}`)}`;
    if ((await d.kv.countInWindow(key, WINDOW_MS)) <= d.perMinute) return next();
    d.metrics.loginRefused('rate_limit');
    throw new GatewayError('too_many_requests', 429, { headers: { 'Retry-After': String(WINDOW_MS / 1000) } });
  };
}

/**
 * What one client is, for counting: an IPv4 address, or the /64 an IPv6 address belongs to (RFC 4291
 * §2.5.4: a /64 is one link; one customer gets at least one and can use any address in it).
 */
export function addressGroup(ip: string): string {
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (v4 || !ip.includes(':')) return v4?.[1] ?? ip;
  let canonical: string;
  try {
    canonical = new URL(`http://[${ip.split('%')[0]}]/`).hostname.slice(1, -1); // WHATWG URL: compressed, hex only
  } catch {
    return ip;
  }
  const [head = '', tail] = canonical.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/**
 * /auth/login is a navigation: a browser refused here (429, 503) gets a page with the same status and
 * Retry-After and a link to try again, not JSON; any other client keeps the JSON answer. No script and
 * no inline style (the CSP forbids both).
 */
export function loginErrorPage(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    const navigation = req.get('sec-fetch-mode') === 'navigate' || /\btext\/html\b/i.test(req.get('accept') ?? '');
    const refusal: [ErrorCode, number, Record<string, string>] | undefined =
      err instanceof GatewayError && (err.status === 429 || err.status === 503)
        ? [err.code, err.status, err.headers]
        : err instanceof StoreUnavailableError
          ? ['session_store_unavailable', 503, { 'Retry-After': String(RETRY_AFTER_SECONDS) }]
          : undefined;
    if (!navigation || !refusal || res.headersSent) return next(err);
    const [code, status, headers] = refusal;
    if (status >= 500) log.warn({ err, code, path: req.path }, 'request failed');
    const query = req.originalUrl.indexOf('?');
    const retry = escapeHtml(`/auth/login${query < 0 ? '' : req.originalUrl.slice(query)}`);
    const body =
      '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Sign-in unavailable</title></head>\n' +
      `<body><h1>Sign-in is unavailable right now</h1><p>${escapeHtml(MESSAGES[code])}</p>` +
      `<p><a href="${retry}">Try again</a></p></body></html>\n`;
    res.status(status).set(headers).type('html').send(body);
  };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
