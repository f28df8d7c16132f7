/**
 * Helpers for the token-refresh tests (test/e2e/refresh-*.test.ts, redis-topologies): one browser's session
 * cookie replayed on any gateway instance, a transcript of every gateway response (for the error_description
 * leak check), and the audit that no refresh token the IdP has rotated or rejected was ever presented again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import { Keyring, type SessionKeys } from '../../src/session/keyring';
import type { TestIdp, TokenRequestRecord } from './idp';
import { loginAs, type Response } from './login';
import { SESSION_SECRET, SPA, type Instance, type Stack } from './stack';

/** Every gateway response a refresh test received: status, headers and body text. */
export const transcript: Array<{ status: number; headers: Record<string, unknown>; text: string }> = [];

function record(r: Response): Response {
  transcript.push({ status: r.status, headers: r.headers, text: typeof r.text === 'string' ? r.text : '' });
  return r;
}

/** The `gatehouse=<value>` pair of the session cookie set by `res` (throws if none). */
export function sessionCookieFrom(res: Response): string {
  const setCookie = ([] as string[]).concat((res.headers['set-cookie'] as string[] | string | undefined) ?? []);
  const pair = setCookie.find((c) => c.startsWith('gatehouse=') && !c.startsWith('gatehouse=;'))?.split(';')[0];
  if (!pair) throw new Error(`no session cookie in ${JSON.stringify(setCookie)}`);
  return pair;
}

/** The parsed JSON body of a gateway response. */
export function bodyOf(r: Response): Record<string, unknown> {
  return r.body as Record<string, unknown>;
}

/** [status, error code] of a gateway response. */
export function outcome(r: Response): [number, unknown] {
  return [r.status, bodyOf(r).error];
}

/** Every Set-Cookie line of a response. */
export function setCookies(res: Response): string[] {
  return ([] as string[]).concat((res.headers['set-cookie'] as string[] | string | undefined) ?? []);
}

/** Logs `sub` in through `inst` and returns the session cookie (`gatehouse=s%3A...`) to replay anywhere. */
export async function login(stack: Stack, sub: string, inst: Instance = stack.gw): Promise<string> {
  const cb = await loginAs(inst.agent(), stack.idp, sub);
  record(cb);
  if (cb.status !== 302) throw new Error(`login of ${sub} answered ${cb.status} ${cb.text}`);
  return sessionCookieFrom(cb);
}

/** `GET /api<path>` on `inst` as the SPA does it (X-CSRF: 1) with `cookie`. */
export async function api(inst: Instance, cookie: string, path = '/things'): Promise<Response> {
  return record(await request(inst.server).get(`/api${path}`).set(SPA).set('Cookie', cookie));
}

/**
 * After a transient refresh failure the gateway lets the session's refresh cool down for Retry-After
 * (1 s; src/tokens/refresh.ts COOLDOWN_MS) before sending the IdP another grant.
 */
export function outliveRefreshCooldown(): Promise<void> {
  return sleep(1100);
}

/** `GET /auth/session` on `inst` with `cookie`. */
export async function sessionInfo(inst: Instance, cookie: string): Promise<Response> {
  return record(await request(inst.server).get('/auth/session').set(SPA).set('Cookie', cookie));
}

/** The storage keys of the session named by `cookie` (same derivation as the gateway: keyed hash of the id). */
export function keysOf(stack: Stack, cookie: string): SessionKeys {
  const value = decodeURIComponent(cookie.slice(cookie.indexOf('=') + 1));
  const m = /^s:([^.]+)\./.exec(value);
  if (!m) throw new Error(`not a signed session cookie: ${cookie}`);
  return new Keyring([SESSION_SECRET], stack.prefix).forSession(m[1]!);
}

/** Waits until the access token issued `ttlSeconds` ago has expired (plus a margin). */
export function outliveAccessToken(ttlSeconds: number): Promise<void> {
  return sleep(ttlSeconds * 1000 + 200);
}

/** The Bearer the upstream saw on its last `n` requests. */
export function bearersSeen(stack: Stack, n: number): string[] {
  return stack.upstream.requests.slice(-n).map((r) => String(r.headers.authorization));
}

/** Access tokens the IdP issued after `issuedBefore` tokens (responses carry access, refresh, ID token in that order). */
export function accessTokensIssuedSince(idp: TestIdp, issuedBefore: number): string[] {
  // Opaque oidc-provider tokens have no dots; ID tokens are JWTs. Each response lists its access token first.
  const fresh = idp.tokensIssued().slice(issuedBefore);
  const out: string[] = [];
  for (let i = 0; i < fresh.length; i++) {
    const prev = fresh[i - 1];
    if (i === 0 || (prev !== undefined && prev.includes('.'))) out.push(fresh[i]!);
  }
  return out;
}

/**
 * Under refresh-token rotation (RFC 9700 §4.14.2) a refresh token is good for one use: one that reached
 * oidc-provider (answered by it, not by a failRefresh injection) has been rotated (200) or is dead (an error), so
 * the gateway presenting it again is a violation. `stillValid` lists requests after
 * which the token legitimately stayed valid (cut off before oidc-provider looked at it, or answered by an IdP
 * told not to rotate).
 */
export function refreshTokenReuse(idp: TestIdp, stillValid: ReadonlySet<TokenRequestRecord> = new Set()): string[] {
  const retired = new Map<string, number>();
  const violations: string[] = [];
  idp.tokenRequests.forEach((r, i) => {
    if (r.grantType !== 'refresh_token' || r.refreshToken === undefined) return;
    const at = retired.get(r.refreshToken);
    if (at !== undefined) violations.push(`request #${i} presented the refresh token already used by request #${at}`);
    if (!r.injected && !stillValid.has(r)) retired.set(r.refreshToken, i);
  });
  return violations;
}

/** Counts of refresh grants and reuse detections, to assert deltas. */
export function refreshCounters(idp: TestIdp): { grants: number; reuse: number; ok: number } {
  return { grants: idp.grants.refresh_token, reuse: idp.reuseDetected, ok: idp.refreshSucceeded };
}

/** Log lines (parsed) of one session, by its storage hash. */
export function logsOf(stack: Stack, keys: SessionKeys): Array<Record<string, unknown>> {
  return stack.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.session === keys.hash);
}
