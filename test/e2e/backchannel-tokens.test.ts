/**
 * POST /auth/backchannel-logout against bad logout tokens: one request per way a token or its request
 * breaks OIDC Back-Channel Logout 1.0 (§2.4 the token, §2.5 the request, §2.6 the validation steps), each
 * aimed at a live session (its `sub` and `sid`), which must survive every one. Tokens are forged with the
 * test IdP's real signing key (signLogoutToken), so only the flaw under test is wrong; attackers' keys come
 * from jose. Every request is server to server: no cookie, no X-CSRF (the IdP sends neither).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPublicKey } from 'node:crypto';
import request from 'supertest';
import { SignJWT, decodeJwt, exportJWK, generateKeyPair, type JWK } from 'jose';
import { BACKCHANNEL_LOGOUT_EVENT } from '../support/idp';
import { loginAs, type Agent } from '../support/login';
import { startStack, SPA, type Stack } from '../support/stack';

const b64url = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** The ID token of the latest login (the last JWT the IdP's token endpoint returned). */
function lastIdToken(s: Stack): string {
  const jwt = s.idp
    .tokensIssued()
    .filter((t) => t.split('.').length === 3)
    .at(-1);
  if (!jwt) throw new Error('no ID token issued yet');
  return jwt;
}

interface Post {
  type?: string;
  body: string;
}
const form = (fields: Record<string, string | string[]>): Post => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) for (const one of Array.isArray(v) ? v : [v]) p.append(k, one);
  return { body: p.toString() };
};
const tokenForm = (token: string): Post => form({ logout_token: token });

describe('back-channel logout refuses every bad logout token and keeps the targeted session', () => {
  let s: Stack;
  let bob: Agent;
  /** sub and sid of bob's session: every bad token names them, so accepting one would end it */
  let target: { sub: string; sid: string };
  let idpPublicJwk: JWK;
  let attacker: { privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; publicJwk: JWK };
  let jkuServer: http.Server;
  let jkuUrl: string;

  beforeAll(async () => {
    s = await startStack({ backchannel: true, idp: { accessTokenTtl: 60 } });
    bob = s.gw.agent();
    await loginAs(bob, s.idp, 'bob');
    const sid = decodeJwt(lastIdToken(s)).sid;
    if (typeof sid !== 'string') throw new Error('the IdP put no sid in the ID token');
    target = { sub: 'bob', sid };

    const jwks = (await request(s.idp.issuer).get('/jwks').expect(200)).body as { keys: JWK[] };
    idpPublicJwk = jwks.keys[0]!;
    const pair = await generateKeyPair('RS256', { extractable: true });
    attacker = {
      privateKey: pair.privateKey,
      publicJwk: { ...(await exportJWK(pair.publicKey)), kid: 'attacker', alg: 'RS256', use: 'sig' },
    };
    // A JWKS an attacker controls, for a `jku` header: the gateway must never fetch keys from a token's header.
    jkuServer = http.createServer((_req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ keys: [attacker.publicJwk] }));
    });
    await new Promise<void>((r) => jkuServer.listen(0, '127.0.0.1', r));
    jkuUrl = `http://127.0.0.1:${(jkuServer.address() as AddressInfo).port}/jwks`;
  });
  afterAll(async () => {
    jkuServer?.closeAllConnections();
    await new Promise<void>((r) => (jkuServer ? jkuServer.close(() => r()) : r()));
    await s?.close();
  });

  const post = (p: Post) =>
    request(s.gw.url)
      .post('/auth/backchannel-logout')
      .type(p.type ?? 'form')
      .send(p.body);

  /** A validly signed token for bob's session, with `claims` merged over the valid ones. */
  const forged = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
    s.idp.signLogoutToken({ ...target, ...claims }, header);
  /** The payload a valid token for bob's session would carry (fresh jti). */
  const validPayload = async () => decodeJwt(await forged());
  const now = () => Math.floor(Date.now() / 1000);
  /** Signs `payload` with an attacker's key (`alg` RS256) and `header`. */
  const attackerSigned = (payload: Record<string, unknown>, header: Record<string, unknown>) =>
    new SignJWT(payload).setProtectedHeader({ alg: 'RS256', typ: 'logout+jwt', ...header }).sign(attacker.privateKey);

  interface Row {
    /** the section of OIDC Back-Channel Logout 1.0 the token breaks */
    rule: string;
    name: string;
    make: () => Promise<Post>;
    /** statuses accepted besides 400 (an oversized body may be 413) */
    alsoOk?: number[];
  }

  const rows: Row[] = [
    // ---- the request (§2.5: a form-encoded POST with one logout_token) ----
    { rule: '§2.5', name: 'without a logout_token parameter', make: async () => form({ token: await forged() }) },
    { rule: '§2.5', name: 'with an empty logout_token', make: async () => form({ logout_token: '' }) },
    { rule: '§2.5', name: 'with an empty body', make: async () => ({ body: '' }) },
    { rule: '§2.5', name: 'that is one segment', make: async () => tokenForm('abc') },
    { rule: '§2.5', name: 'that is two segments', make: async () => tokenForm((await forged()).split('.').slice(0, 2).join('.')) },
    { rule: '§2.5', name: 'that is four segments', make: async () => tokenForm(`${await forged()}.AAAA`) },
    { rule: '§2.5', name: 'that is five segments (a JWE the gateway never registered)', make: async () => tokenForm('a.b.c.d.e') },
    {
      rule: '§2.5',
      name: 'sent as a JSON body',
      make: async () => ({ type: 'json', body: JSON.stringify({ logout_token: await forged() }) }),
    },
    { rule: '§2.5', name: 'sent as text/plain', make: async () => ({ type: 'text', body: `logout_token=${await forged()}` }) },
    { rule: '§2.5', name: 'sent twice in one body', make: async () => form({ logout_token: [await forged(), await forged()] }) },
    {
      rule: '§2.5',
      name: 'in a body over 64 KiB',
      make: async () => form({ logout_token: await forged(), padding: 'a'.repeat(70 * 1024) }),
      alsoOk: [413],
    },

    // ---- signature and algorithm (§2.6 steps 2–3) ----
    {
      rule: '§2.6 steps 2–3',
      name: 'with alg none',
      make: async () => tokenForm(`${b64url({ alg: 'none', typ: 'logout+jwt' })}.${b64url(await validPayload())}.`),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'with alg none and the signature of a valid token',
      make: async () => {
        const [, payload, signature] = (await forged()).split('.');
        return tokenForm(`${b64url({ alg: 'none', kid: idpPublicJwk.kid, typ: 'logout+jwt' })}.${payload}.${signature}`);
      },
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'HS256-signed with the client secret',
      make: async () =>
        tokenForm(
          await new SignJWT(await validPayload())
            .setProtectedHeader({ alg: 'HS256', typ: 'logout+jwt' })
            .sign(new TextEncoder().encode(s.idp.clientSecret)),
        ),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'HS256-signed with the IdP public key as the secret (key confusion)',
      make: async () => {
        const pem = createPublicKey({ key: idpPublicJwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
        return tokenForm(
          await new SignJWT(await validPayload())
            .setProtectedHeader({ alg: 'HS256', kid: idpPublicJwk.kid, typ: 'logout+jwt' })
            .sign(new TextEncoder().encode(pem)),
        );
      },
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'signed by the IdP key under an unknown kid',
      make: async () => tokenForm(await forged({}, { kid: 'unknown-kid' })),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'signed by a key carried in its own jwk header',
      make: async () => tokenForm(await attackerSigned(await validPayload(), { jwk: attacker.publicJwk })),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'signed by a key in its jwk header under the IdP kid',
      make: async () => tokenForm(await attackerSigned(await validPayload(), { kid: idpPublicJwk.kid, jwk: attacker.publicJwk })),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'signed by a key published at its jku header',
      make: async () => tokenForm(await attackerSigned(await validPayload(), { kid: 'attacker', jku: jkuUrl })),
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'whose signature was altered',
      make: async () => {
        const [h, p, sig] = (await forged()).split('.') as [string, string, string];
        const bytes = Buffer.from(sig, 'base64url');
        bytes[10] = bytes[10]! ^ 0xff;
        return tokenForm(`${h}.${p}.${bytes.toString('base64url')}`);
      },
    },
    {
      rule: '§2.6 steps 2–3',
      name: 'whose payload was swapped after signing',
      make: async () => {
        const [h, , sig] = (await s.idp.signLogoutToken({ sub: 'somebody-else' })).split('.');
        return tokenForm(`${h}.${b64url(await validPayload())}.${sig}`);
      },
    },

    // ---- iss, aud, iat, exp (§2.6 step 4) ----
    { rule: '§2.6 step 4', name: 'from a foreign iss', make: async () => tokenForm(await forged({ iss: 'https://evil.example' })) },
    { rule: '§2.6 step 4', name: 'whose iss has a trailing slash', make: async () => tokenForm(await forged({ iss: `${s.idp.issuer}/` })) },
    { rule: '§2.6 step 4', name: 'without iss', make: async () => tokenForm(await forged({ iss: undefined })) },
    { rule: '§2.6 step 4', name: 'for another audience', make: async () => tokenForm(await forged({ aud: 'another-client' })) },
    { rule: '§2.6 step 4', name: 'without aud', make: async () => tokenForm(await forged({ aud: undefined })) },
    {
      rule: '§2.6 step 4',
      name: 'with an extra untrusted audience',
      make: async () => tokenForm(await forged({ aud: [s.idp.clientId, 'another-client'] })),
    },
    { rule: '§2.6 step 4', name: 'without iat', make: async () => tokenForm(await forged({ iat: undefined })) },
    { rule: '§2.6 step 4', name: 'with iat an hour in the future', make: async () => tokenForm(await forged({ iat: now() + 3600 })) },
    {
      rule: '§2.6 step 4',
      name: 'with iat an hour old',
      make: async () => tokenForm(await forged({ iat: now() - 3600, exp: now() + 60 })),
    },
    { rule: '§2.6 step 4', name: 'with a non-numeric iat', make: async () => tokenForm(await forged({ iat: String(now()) })) },
    { rule: '§2.6 step 4', name: 'without exp', make: async () => tokenForm(await forged({ exp: undefined })) },
    { rule: '§2.6 step 4', name: 'that has expired', make: async () => tokenForm(await forged({ iat: now() - 180, exp: now() - 120 })) },

    // ---- sub or sid (§2.6 step 5) ----
    {
      rule: '§2.6 step 5',
      name: 'with neither sub nor sid',
      make: async () => tokenForm(await forged({ sub: undefined, sid: undefined })),
    },
    { rule: '§2.6 step 5', name: 'with an empty sub and no sid', make: async () => tokenForm(await forged({ sub: '', sid: undefined })) },
    { rule: '§2.6 step 5', name: 'with a numeric sid', make: async () => tokenForm(await forged({ sid: 42 })) },

    // ---- events (§2.6 step 6) ----
    { rule: '§2.6 step 6', name: 'without events', make: async () => tokenForm(await forged({ events: undefined })) },
    {
      rule: '§2.6 step 6',
      name: 'whose events is a string',
      make: async () => tokenForm(await forged({ events: BACKCHANNEL_LOGOUT_EVENT })),
    },
    {
      rule: '§2.6 step 6',
      name: 'whose events is an array',
      make: async () => tokenForm(await forged({ events: [BACKCHANNEL_LOGOUT_EVENT] })),
    },
    { rule: '§2.6 step 6', name: 'whose events is null', make: async () => tokenForm(await forged({ events: null })) },
    {
      rule: '§2.6 step 6',
      name: 'whose events lacks the back-channel logout member',
      make: async () => tokenForm(await forged({ events: {} })),
    },
    {
      rule: '§2.6 step 6',
      name: 'whose events names another event only',
      make: async () => tokenForm(await forged({ events: { 'http://schemas.openid.net/event/other': {} } })),
    },
    ...(['', true, [], null] as const).map((value): Row => ({
      rule: '§2.6 step 6',
      name: `whose back-channel logout member is ${JSON.stringify(value)}`,
      make: async () => tokenForm(await forged({ events: { [BACKCHANNEL_LOGOUT_EVENT]: value } })),
    })),

    // ---- nonce (§2.6 step 7) ----
    { rule: '§2.6 step 7', name: 'with a nonce claim', make: async () => tokenForm(await forged({ nonce: 'n-0S6_WzA2Mj' })) },
    { rule: '§2.6 step 7', name: 'that is an ID token the IdP issued', make: async () => tokenForm(lastIdToken(s)) },

    // ---- jti, required by §2.4 (a replayed jti: backchannel-actions.test.ts) ----
    { rule: '§2.4 jti', name: 'without jti', make: async () => tokenForm(await forged({ jti: undefined })) },
    { rule: '§2.4 jti', name: 'with an empty jti', make: async () => tokenForm(await forged({ jti: '' })) },

    // ---- another JWT type (§2.4: logout tokens are explicitly typed logout+jwt) ----
    { rule: '§2.4 explicit typing', name: 'typed at+jwt', make: async () => tokenForm(await forged({}, { typ: 'at+jwt' })) },
    {
      rule: '§2.4 explicit typing',
      name: 'typed application/at+jwt',
      make: async () => tokenForm(await forged({}, { typ: 'application/at+jwt' })),
    },
    { rule: '§2.4 explicit typing', name: 'typed dpop+jwt', make: async () => tokenForm(await forged({}, { typ: 'dpop+jwt' })) },
  ];

  it.each(rows)('$rule: refuses a logout token $name with 400 invalid_request, and the targeted session survives', async (r) => {
    const res = await post(await r.make());
    expect([400, ...(r.alsoOk ?? [])]).toContain(res.status);
    if (res.status === 400) expect(res.body).toMatchObject({ error: 'invalid_request' });
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['set-cookie']).toBeUndefined();
    await bob.get('/api/x').set(SPA).expect(200);
  });

  it('answers GET with 405 even when it carries a valid logout token, and ends nothing', async () => {
    const res = await request(s.gw.url).get(`/auth/backchannel-logout?logout_token=${await forged()}`);
    expect(res.status).toBe(405);
    expect(res.headers['cache-control']).toBe('no-store');
    await bob.get('/api/x').set(SPA).expect(200);
  });

  it('answers 200 with no-store to a valid logout token for an unknown sid', async () => {
    const res = await post(tokenForm(await s.idp.signLogoutToken({ sid: 'no-such-idp-session' })));
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const unknownSub = await post(tokenForm(await s.idp.signLogoutToken({ sub: 'nobody-ever-logged-in' })));
    expect(unknownSub.status).toBe(200);
    await bob.get('/api/x').set(SPA).expect(200);
  });

  it('accepts a valid logout token sent without cookies, X-CSRF or Origin, ignoring unknown parameters, and ends the session', async () => {
    // The control for every row above: the same target, validly signed, does end bob's session.
    const res = await post(form({ logout_token: await forged(), unknown_parameter: 'ignored' }));
    expect(res.status).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    await bob.get('/api/x').set(SPA).expect(401);
  });
});
