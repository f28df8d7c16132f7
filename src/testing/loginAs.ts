/**
 * Logging a supertest agent in through the real flow: GET /auth/login → the IdP → GET /auth/callback. No
 * shortcut into the session store, so what a test sees after loginAs() is what a browser would have.
 */
import type { TestIdp } from './testIdp';
import { driveIdp, idpAgent, pathOf, summarize, type Agent, type Response } from './idpBrowser';

export interface LoginOptions {
  /** `returnTo` query of GET /auth/login (sent URL-encoded, as given) */
  returnTo?: string;
  /**
   * the browser's cookie jar at the IdP. Pass one (see idpAgent()) to keep the IdP session, e.g. to log out at
   * the IdP afterwards with idpLogout(); by default a fresh one is used for every login.
   */
  idpAgent?: Agent;
  /**
   * the IdP the gateway must send the browser to. Default: whatever origin the gateway's /auth/login redirects
   * to (the test IdP the gateway was configured with).
   */
  idp?: Pick<TestIdp, 'issuer'>;
}

export interface IdpFlowTrace {
  /** the gateway's 302 Location to the IdP authorization endpoint */
  authorizationUrl: string;
  /** the final redirect to the gateway's callback (`<publicUrl>/auth/callback?code=...&state=...`) */
  callbackUrl: string;
  /** which HTML forms were submitted at the IdP ('login', 'consent'); empty for programmatic interactions */
  formsSubmitted: string[];
}

/** The gateway's /auth/callback response, plus how the IdP part went. */
export type LoginResponse = Response & { idp: IdpFlowTrace };

/** The gateway's callback, where a pushed authorization request sends the browser back. */
const CALLBACK_PATH = '/auth/callback';

const optionsOf = (o: string | LoginOptions | undefined): LoginOptions => (typeof o === 'string' ? { returnTo: o } : (o ?? {}));

/**
 * The login flow without judging its outcome: resolves to the gateway's /auth/callback response whatever its
 * status (tests of failed logins look at it). Throws only when the flow cannot be followed at all.
 * `requireForms`: fail unless the IdP showed its HTML login form (an IdP started with interactions: 'dev').
 */
export async function loginFlow(
  gateway: Agent,
  sub: string,
  returnToOrOptions?: string | LoginOptions,
  requireForms = false,
): Promise<LoginResponse> {
  const o = optionsOf(returnToOrOptions);
  const loginPath = o.returnTo === undefined ? '/auth/login' : `/auth/login?returnTo=${encodeURIComponent(o.returnTo)}`;
  const start = await gateway.get(loginPath).redirects(0);
  const authorizationUrl = String(start.headers.location ?? '');
  const issuer = o.idp?.issuer ?? (URL.canParse(authorizationUrl) ? new URL(authorizationUrl).origin : '');
  if (start.status !== 302 || !issuer || !authorizationUrl.startsWith(`${issuer}/`)) {
    throw new Error(`login: GET ${loginPath} should answer 302 to the IdP${o.idp ? ` ${o.idp.issuer}` : ''}, got ${summarize(start)}`);
  }
  // With a pushed authorization request (RFC 9126) the URL carries only a request_uri: the way back is the
  // gateway's callback, wherever it is served.
  const params = new URL(authorizationUrl).searchParams;
  const redirectUri = params.get('redirect_uri') ?? (params.has('request_uri') ? CALLBACK_PATH : undefined);
  if (!redirectUri) throw new Error(`login: the authorization URL has neither redirect_uri nor request_uri: ${authorizationUrl}`);

  const formsSubmitted: string[] = [];
  const jar = o.idpAgent ?? idpAgent({ issuer });
  const callbackUrl = await driveIdp(jar, issuer, authorizationUrl, redirectUri, sub, formsSubmitted);
  if (requireForms && !formsSubmitted.includes('login')) {
    throw new Error('loginThroughForms: the IdP showed no login form; start the IdP with interactions: "dev"');
  }
  // Only the path goes to the agent: it may be bound to an in-memory app whose port differs from publicUrl's.
  const callback = await gateway.get(pathOf(callbackUrl)).redirects(0);
  return Object.assign(callback, { idp: { authorizationUrl, callbackUrl, formsSubmitted } });
}

/**
 * Leaves `agent` logged in as `sub`: GET /auth/login (302 to the IdP), the IdP's login as `sub` (the test IdP's
 * programmatic interactions, or its HTML forms when started with interactions: 'dev'), then GET /auth/callback
 * on `agent`, which keeps the session cookie. Throws unless the callback answered 302 (a login that failed
 * would otherwise only show up later, as a puzzling 401). Resolves to the callback response.
 *
 *   const agent = request.agent(gw.app);
 *   await loginAs(agent, 'alice');                       // or loginAs(agent, 'alice', { returnTo: '/inbox' })
 *   await agent.get('/api/me').set('X-CSRF', '1').expect(200);
 */
export async function loginAs(agent: Agent, sub: string, returnToOrOptions?: string | LoginOptions): Promise<LoginResponse> {
  const callback = await loginFlow(agent, sub, returnToOrOptions);
  if (callback.status !== 302) throw new Error(`loginAs(${sub}): the gateway's /auth/callback answered ${summarize(callback)}`);
  return callback;
}
