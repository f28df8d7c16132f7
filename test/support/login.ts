/**
 * Driving logins/logouts through the gateway and the test IdP, plus small server/test utilities.
 *
 *   const gw = await reserveServer();                        // listening, app attached later
 *   const idp = await startTestIdp({ redirectUri: `${gw.url}/auth/callback`, ... });
 *   const gh = await createGatehouse({ publicUrl: gw.url, issuer: idp.issuer, ... });
 *   gw.on('request', gh.app);
 *   const agent = request.agent(gw);
 *   const cb = await loginAs(agent, idp, 'alice', '/dashboard');   // the gateway's /auth/callback response
 *   expect(cb.status).toBe(302);
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import type { TestIdp } from './idp';

/** a supertest agent (keeps cookies): `request.agent(server)` or `request.agent(url)` */
export type Agent = ReturnType<typeof request.agent>;
export type Response = request.Response;

export interface LoginOptions {
  /** `returnTo` query of GET /auth/login (sent URL-encoded, as given) */
  returnTo?: string;
  /**
   * the browser's cookie jar at the IdP. Pass one (see idpAgent()) to keep the IdP session, e.g. to log out at
   * the IdP afterwards with idpLogout(); by default a fresh one is used for every login.
   */
  idpAgent?: Agent;
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

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `gatehouse-test-<random>:`: a Redis key prefix of its own for each test file / gateway instance. */
export function uniquePrefix(): string {
  return `gatehouse-test-${randomBytes(6).toString('hex')}:`;
}

export type ReservedServer = http.Server & {
  /** `http://127.0.0.1:<port>`: use it as the gateway's publicUrl */
  readonly url: string;
  readonly port: number;
};

/**
 * A listening http.Server on 127.0.0.1:<ephemeral> with no handler yet: its URL is known before the gateway
 * exists (the IdP needs the redirect/back-channel URIs up front). Attach the app with `server.on('request', app)`.
 */
export async function reserveServer(): Promise<ReservedServer> {
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return Object.assign(server, { url: `http://127.0.0.1:${port}`, port });
}

/** closeAllConnections() then close(); resolves also when the server was not listening. */
export function closeServer(server: http.Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
  });
}

/** A fresh cookie jar for the IdP (the "browser" at the IdP). */
export function idpAgent(idp: Pick<TestIdp, 'issuer'>): Agent {
  return request.agent(idp.issuer);
}

const decodeHtml = (s: string) =>
  s
    .replace(/&quot;/g, '"')
    .replace(/&#39;|&#x27;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

/** first `<form ... action="...">` and its `<input name=... value=...>` fields */
function parseForm(html: string): { action: string; fields: Record<string, string> } | undefined {
  const form = /<form\b[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
  if (!form || form[1] === undefined) return undefined;
  const fields: Record<string, string> = {};
  for (const m of (form[2] ?? '').matchAll(/<input\b[^>]*>/gi)) {
    const tag = m[0];
    const name = /\bname="([^"]*)"/i.exec(tag)?.[1];
    const value = /\bvalue="([^"]*)"/i.exec(tag)?.[1];
    if (name !== undefined) fields[decodeHtml(name)] = value === undefined ? '' : decodeHtml(value);
  }
  return { action: decodeHtml(form[1]), fields };
}

function pathOf(url: string): string {
  const u = new URL(url);
  return u.pathname + u.search;
}

function summarize(r: Response): string {
  const text = typeof r.text === 'string' ? r.text.replace(/\s+/g, ' ').slice(0, 300) : '';
  return `${r.status} ${r.headers.location ? `Location: ${r.headers.location} ` : ''}${text}`;
}

/**
 * Follow the IdP from the authorization URL until it redirects to `redirectUri`; fills the devInteractions
 * login/consent forms if the IdP shows them. Returns the callback URL.
 */
async function driveIdp(
  idpJar: Agent,
  issuer: string,
  authorizationUrl: string,
  redirectUri: string,
  sub: string,
  formsSubmitted: string[],
): Promise<string> {
  let location = authorizationUrl;
  for (let hops = 0; ; hops++) {
    if (location === redirectUri || location.startsWith(`${redirectUri}?`)) return location;
    if (hops > 20) throw new Error(`login: too many redirects at the IdP (last: ${location})`);
    if (!location.startsWith(`${issuer}/`)) {
      throw new Error(`login: expected a redirect to the IdP (${issuer}) or to ${redirectUri}, got ${location}`);
    }
    const r = await idpJar.get(pathOf(location)).set('X-Test-Account', sub).redirects(0);
    if (r.status === 302 || r.status === 303) {
      location = new URL(String(r.headers.location), issuer).href;
      continue;
    }
    const form = r.status === 200 ? parseForm(r.text) : undefined;
    const prompt = form?.fields.prompt;
    if (!form || (prompt !== 'login' && prompt !== 'consent')) {
      throw new Error(`login: unexpected IdP answer for GET ${location}: ${summarize(r)}`);
    }
    const fields: Record<string, string> =
      prompt === 'login' ? { ...form.fields, login: sub, password: 'test-password' } : { ...form.fields };
    const post = await idpJar
      .post(pathOf(new URL(form.action, location).href))
      .type('form')
      .send(fields)
      .redirects(0);
    if (post.status !== 302 && post.status !== 303) {
      throw new Error(`login: IdP ${prompt} form answered ${summarize(post)}`);
    }
    formsSubmitted.push(prompt);
    location = new URL(String(post.headers.location), issuer).href;
  }
}

/**
 * Drive the IdP part only: starting at an authorization URL (built by you, e.g. with openid-client), follow the
 * IdP as `sub` until it redirects to `redirectUri` (defaults to the URL's redirect_uri parameter). Returns that
 * final URL (`<redirectUri>?code=...&state=...`, or `?error=...`). Fills devInteractions forms if shown.
 */
export async function followIdp(
  idp: Pick<TestIdp, 'issuer'>,
  authorizationUrl: string,
  sub: string,
  opts: { idpAgent?: Agent; redirectUri?: string } = {},
): Promise<string> {
  const redirectUri = opts.redirectUri ?? new URL(authorizationUrl).searchParams.get('redirect_uri');
  if (!redirectUri) throw new Error(`followIdp: no redirect_uri in ${authorizationUrl}`);
  return driveIdp(opts.idpAgent ?? idpAgent(idp), idp.issuer, authorizationUrl, redirectUri, sub, []);
}

async function login(
  gateway: Agent,
  idp: TestIdp,
  sub: string,
  returnToOrOptions: string | LoginOptions | undefined,
  requireForms: boolean,
): Promise<LoginResponse> {
  const o: LoginOptions = typeof returnToOrOptions === 'string' ? { returnTo: returnToOrOptions } : (returnToOrOptions ?? {});
  const loginPath = o.returnTo === undefined ? '/auth/login' : `/auth/login?returnTo=${encodeURIComponent(o.returnTo)}`;
  const start = await gateway.get(loginPath).redirects(0);
  const authorizationUrl = String(start.headers.location ?? '');
  if (start.status !== 302 || !authorizationUrl.startsWith(`${idp.issuer}/`)) {
    throw new Error(`login: GET ${loginPath} should answer 302 to the IdP ${idp.issuer}, got ${summarize(start)}`);
  }
  const redirectUri = new URL(authorizationUrl).searchParams.get('redirect_uri');
  if (!redirectUri) throw new Error(`login: the authorization URL has no redirect_uri: ${authorizationUrl}`);

  const formsSubmitted: string[] = [];
  const callbackUrl = await driveIdp(o.idpAgent ?? idpAgent(idp), idp.issuer, authorizationUrl, redirectUri, sub, formsSubmitted);
  if (requireForms && !formsSubmitted.includes('login')) {
    throw new Error('loginThroughForms: the IdP showed no login form; start the IdP with interactions: "dev"');
  }
  const callback = await gateway.get(pathOf(callbackUrl)).redirects(0);
  return Object.assign(callback, { idp: { authorizationUrl, callbackUrl, formsSubmitted } });
}

/**
 * Log `sub` in through the gateway: GET /auth/login (expects 302 to the IdP), follow the IdP (programmatic
 * interactions; the account is sent as `X-Test-Account`, so concurrent logins are safe), then GET the gateway's
 * /auth/callback with the code on `gateway`. Returns the callback response (normally 302 to returnTo, with the
 * session cookie now in `gateway`'s jar). Does not assert the callback's status.
 * Also works against an IdP with interactions: 'dev' (fills the forms).
 */
export function loginAs(gateway: Agent, idp: TestIdp, sub: string, returnTo?: string | LoginOptions): Promise<LoginResponse> {
  return login(gateway, idp, sub, returnTo, false);
}

/** Like loginAs, but against an IdP started with `interactions: 'dev'`: submits its HTML login and consent forms. */
export function loginThroughForms(gateway: Agent, idp: TestIdp, sub: string, returnTo?: string | LoginOptions): Promise<LoginResponse> {
  return login(gateway, idp, sub, returnTo, true);
}

/**
 * Follow an IdP end-session URL (the gateway's `logoutUrl`) with the browser's IdP cookie jar (the `idpAgent`
 * used at login): GET it, submit the "sign out?" form with logout=yes. Before answering, the IdP delivers
 * back-channel logout tokens (see `idp.backchannelLogouts`). Returns the final redirect Location
 * (the post_logout_redirect_uri, or the IdP's own "signed out" page).
 */
export async function idpLogout(jar: Agent, idp: Pick<TestIdp, 'issuer'>, logoutUrl: string): Promise<string> {
  if (!logoutUrl.startsWith(`${idp.issuer}/`)) throw new Error(`idpLogout: ${logoutUrl} is not at the IdP ${idp.issuer}`);
  const page = await jar.get(pathOf(logoutUrl)).redirects(0);
  if (page.status === 302 || page.status === 303) return new URL(String(page.headers.location), idp.issuer).href;
  const form = page.status === 200 ? parseForm(page.text) : undefined;
  if (!form) throw new Error(`idpLogout: unexpected answer to GET ${logoutUrl}: ${summarize(page)}`);
  const done = await jar
    .post(pathOf(new URL(form.action, logoutUrl).href))
    .type('form')
    .send({ ...form.fields, logout: 'yes' })
    .redirects(0);
  if (done.status !== 302 && done.status !== 303) throw new Error(`idpLogout: confirm answered ${summarize(done)}`);
  return new URL(String(done.headers.location), idp.issuer).href;
}
