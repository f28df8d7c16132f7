/**
 * The session loader of /api, the hot path: what express-session does for a request that only reads its
 * session, without the rest of its per-request work (hashing the session twice to detect changes, a
 * string-keyed HMAC). express-session stays in charge of /auth and of every session it writes (login).
 *
 * - The cookie was shape-checked by cookieGuard. Its signature must verify under one of the configured
 *   secrets, in express-session's format (cookie-signature: `s:<id>.<base64 HMAC-SHA-256(id), unpadded>`),
 *   compared in constant time; keys are built once. Cookie values that verified are remembered (a user sends
 *   many requests with one cookie): only the exact string that passed the check maps to its id.
 * - The session comes from the same sealed store and becomes an express-session Session
 *   (Store#createSession), so destroy() and everything after behave exactly as under express-session.
 *   Nothing here writes: a loaded session is never saved back (the idle slide is its own write).
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Request } from 'express';
import type { Step } from '../http/exchange';
import { cookieValues } from '../http/cookies';
import type { SealedSessionStore } from '../session/sealedStore';

/** Cookie values whose signature verified, oldest first. */
const REMEMBERED_COOKIES = 10_000;

export function sessionLoader(store: SealedSessionStore, secrets: readonly string[], cookieName: string): Step {
  const keys: KeyObject[] = secrets.map((s) => createSecretKey(Buffer.from(s, 'utf8')));
  const verified = new Map<string, string>();
  const idOf = (raw: string): string | undefined => {
    let sid = verified.get(raw);
    if (sid !== undefined) return sid;
    sid = verifiedId(decodeURIComponent(raw), keys);
    if (sid === undefined) return undefined;
    if (verified.size >= REMEMBERED_COOKIES) verified.delete(verified.keys().next().value!);
    verified.set(raw, sid);
    return sid;
  };
  return (req, _res, next) => {
    const [raw] = cookieValues(req, cookieName);
    const sid = raw === undefined ? undefined : idOf(raw);
    if (sid === undefined) return next();
    store.get(sid, (err, sess) => {
      if (err) return next(err);
      // The same store express-session was built with (which gave it `generate`).
      req.sessionStore = store as unknown as typeof req.sessionStore;
      req.sessionID = sid;
      // express-session's Session uses nothing of the request but sessionID, sessionStore and session.
      if (sess) store.createSession(req as unknown as Request, sess);
      next();
    });
  };
}

/** The session id of a signed cookie value, or undefined when no configured secret signed it. */
export function verifiedId(value: string, keys: readonly KeyObject[]): string | undefined {
  const dot = value.lastIndexOf('.');
  if (!value.startsWith('s:') || dot < 2) return undefined;
  const id = value.slice(2, dot);
  const given = Buffer.from(value.slice(dot + 1));
  for (const key of keys) {
    const expected = Buffer.from(createHmac('sha256', key).update(id).digest('base64').replace(/=+$/, ''));
    if (expected.length === given.length && timingSafeEqual(expected, given)) return id;
  }
  return undefined;
}
