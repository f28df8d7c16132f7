/**
 * The browser's side of the IdP: follows its redirects and, when it shows them (interactions: 'dev'), fills its
 * login, consent and sign-out forms. Used by loginAs() and by tests that build authorization URLs themselves.
 */
import request from 'supertest';
import type { TestIdp } from './testIdp';

/** a supertest agent (keeps cookies): `request.agent(app)`, `request.agent(server)` or `request.agent(url)` */
export type Agent = ReturnType<typeof request.agent>;
export type Response = request.Response;

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
export function parseForm(html: string): { action: string; fields: Record<string, string> } | undefined {
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

/** path and query of an absolute URL: what a supertest agent bound to that origin requests */
export function pathOf(url: string): string {
  const u = new URL(url);
  return u.pathname + u.search;
}

/** status, Location and the start of the body, for error messages */
export function summarize(r: Response): string {
  const text = typeof r.text === 'string' ? r.text.replace(/\s+/g, ' ').slice(0, 300) : '';
  return `${r.status} ${r.headers.location ? `Location: ${r.headers.location} ` : ''}${text}`;
}

/**
 * Follow the IdP from the authorization URL until it redirects to `redirectUri`, as `sub` (sent as
 * `X-Test-Account`, which the test IdP's programmatic interactions honour, so concurrent logins of different
 * users are safe); fills the devInteractions login/consent forms if the IdP shows them, recording each in
 * `formsSubmitted`. Returns the final URL (`<redirectUri>?code=...&state=...`, or `?error=...`).
 */
export async function driveIdp(
  idpJar: Agent,
  issuer: string,
  authorizationUrl: string,
  redirectUri: string,
  sub: string,
  formsSubmitted: string[] = [],
): Promise<string> {
  let location = authorizationUrl;
  // A bare path (the authorization URL named no redirect_uri): the way back is that path on any origin but the IdP's.
  const back = (l: string) =>
    redirectUri.startsWith('/')
      ? !l.startsWith(`${issuer}/`) && URL.canParse(l) && new URL(l).pathname === redirectUri
      : l === redirectUri || l.startsWith(`${redirectUri}?`);
  for (let hops = 0; ; hops++) {
    if (back(location)) return location;
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
 * IdP as `sub` until it redirects to `redirectUri` (defaults to the URL's redirect_uri parameter, or with a
 * pushed request to the gateway's `/auth/callback`). Returns that
 * final URL (`<redirectUri>?code=...&state=...`, or `?error=...`). Fills devInteractions forms if shown.
 */
export async function followIdp(
  idp: Pick<TestIdp, 'issuer'>,
  authorizationUrl: string,
  sub: string,
  opts: { idpAgent?: Agent; redirectUri?: string } = {},
): Promise<string> {
  const params = new URL(authorizationUrl).searchParams;
  // A pushed authorization request (RFC 9126) leaves only a request_uri in the URL: the way back is the gateway's callback.
  const redirectUri = opts.redirectUri ?? params.get('redirect_uri') ?? (params.has('request_uri') ? '/auth/callback' : undefined);
  if (!redirectUri) throw new Error(`followIdp: neither redirect_uri nor request_uri in ${authorizationUrl}`);
  return driveIdp(opts.idpAgent ?? idpAgent(idp), idp.issuer, authorizationUrl, redirectUri, sub);
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
