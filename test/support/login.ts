/**
 * Login helpers for Gatehouse's own tests: the kit's (src/testing, published as `gatehouse-bff/testing`), plus the
 * signatures these tests grew up with, which name the IdP and never judge the callback's outcome.
 *
 *   const gw = await reserveServer();                        // listening, app attached later
 *   const idp = await startTestIdp({ redirectUri: `${gw.url}/auth/callback`, ... });
 *   const gh = await createGatehouse({ publicUrl: gw.url, issuer: idp.issuer, ... });
 *   gw.on('request', gh.frontDoor);
 *   const agent = request.agent(gw);
 *   const cb = await loginAs(agent, idp, 'alice', '/dashboard');   // the gateway's /auth/callback response
 *   expect(cb.status).toBe(302);
 */
import { randomBytes } from 'node:crypto';
import type { TestIdp } from './idp';
import { loginFlow, type LoginOptions, type LoginResponse } from '../../src/testing/loginAs';
import type { Agent } from '../../src/testing/idpBrowser';

export { followIdp, idpAgent, idpLogout, type Agent, type Response } from '../../src/testing/idpBrowser';
export { closeServer, reserveServer, type ReservedServer } from '../../src/testing/testServer';
export type { IdpFlowTrace, LoginOptions, LoginResponse } from '../../src/testing/loginAs';

/** `gatehouse-test-<random>:`: a Redis key prefix of its own for each test file / gateway instance. */
export function uniquePrefix(): string {
  return `gatehouse-test-${randomBytes(6).toString('hex')}:`;
}

const withIdp = (idp: TestIdp, o: string | LoginOptions | undefined): LoginOptions => ({
  ...(typeof o === 'string' ? { returnTo: o } : o),
  idp,
});

/**
 * Log `sub` in through the gateway: GET /auth/login (expects 302 to `idp`), follow the IdP (programmatic
 * interactions; the account is sent as `X-Test-Account`, so concurrent logins are safe), then GET the gateway's
 * /auth/callback with the code on `gateway`. Returns the callback response (normally 302 to returnTo, with the
 * session cookie now in `gateway`'s jar). Does not assert the callback's status (the kit's loginAs does).
 * Also works against an IdP with interactions: 'dev' (fills the forms).
 */
export function loginAs(gateway: Agent, idp: TestIdp, sub: string, returnTo?: string | LoginOptions): Promise<LoginResponse> {
  return loginFlow(gateway, sub, withIdp(idp, returnTo));
}

/** Like loginAs, but against an IdP started with `interactions: 'dev'`: submits its HTML login and consent forms. */
export function loginThroughForms(gateway: Agent, idp: TestIdp, sub: string, returnTo?: string | LoginOptions): Promise<LoginResponse> {
  return loginFlow(gateway, sub, withIdp(idp, returnTo), true);
}
