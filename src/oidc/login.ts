/**
 * GET /auth/login: R1–R7. Authorization code flow with PKCE S256 and fresh state and nonce (256 bits
 * each); nothing in the request can steer a protocol parameter (R7), only `returnTo`, parsed to a
 * same-origin path (R19).
 */
import type { RequestHandler } from 'express';
import { randomId } from '../crypto/seal';
import { cookieValues, setTxCookie, type CookiePolicy } from '../http/cookies';
import type { Keyring } from '../session/keyring';
import type { Idp } from './idp';
import type { LoginTransactions } from './loginTx';
import { HOME, parseReturnTo } from './returnTo';

const BINDING = /^[A-Za-z0-9_-]{43}$/;

export function login(deps: {
  idp: Idp;
  tx: LoginTransactions;
  keyring: Keyring;
  cookies: CookiePolicy;
  publicOrigin: string;
}): RequestHandler {
  return async (req, res) => {
    const existing = cookieValues(req, deps.cookies.txName);
    const binding = existing.length === 1 && BINDING.test(existing[0]!) ? existing[0]! : randomId();
    const checks = { state: randomId(), nonce: randomId(), codeVerifier: randomId() };
    const url = await deps.idp.authorizationUrl(checks);
    await deps.tx.save(checks.state, {
      codeVerifier: checks.codeVerifier,
      nonce: checks.nonce,
      returnTo: parseReturnTo(req.query.returnTo, deps.publicOrigin) ?? HOME,
      binding: deps.keyring.fingerprint(binding),
    });
    setTxCookie(res, deps.cookies, binding);
    res.redirect(302, url.href);
  };
}
