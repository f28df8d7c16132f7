import { CompactSign, SignJWT, createLocalJWKSet, exportJWK, generateKeyPair } from 'jose';
import type { CryptoKey, JWK, JWTPayload, JWSHeaderParameters } from 'jose';
import { validateLogoutToken, type LogoutTokenContext } from '../../src/idp/logoutToken';

// The checks on the logout token itself (OIDC Back-Channel Logout 1.0 §2.4 and the validation steps of §2.6);
// the route's own checks are tested end to end: the request's shape in backchannel-tokens.test.ts, replay in
// backchannel-actions.test.ts.
const ISSUER = 'https://idp.example';
const CLIENT_ID = 'gatehouse';
const CLIENT_SECRET = 'a-client-secret-that-is-long-enough-for-hs256!';
const EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const NOW = 1_750_000_000;
const KID = 'idp-key-1';

interface KeyPair {
  privateKey: CryptoKey;
  publicJwk: JWK;
}

let idp: KeyPair;
let idpSecond: KeyPair;
let attacker: KeyPair;
let ctx: LogoutTokenContext;

async function keyPair(kid: string): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  return { privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } };
}

beforeAll(async () => {
  [idp, idpSecond, attacker] = await Promise.all([keyPair(KID), keyPair('idp-key-2'), keyPair('attacker-key')]);
  ctx = {
    issuer: ISSUER,
    clientId: CLIENT_ID,
    keys: createLocalJWKSet({ keys: [idp.publicJwk] }),
    algorithms: ['RS256'],
    nowSeconds: NOW,
  };
});

function claims(overrides: Record<string, unknown> = {}, omit: string[] = []): JWTPayload {
  const all: Record<string, unknown> = {
    iss: ISSUER,
    aud: CLIENT_ID,
    iat: NOW - 5,
    exp: NOW + 115,
    jti: 'jti-1',
    sid: 'sid-1',
    events: { [EVENT]: {} },
    ...overrides,
  };
  for (const name of omit) delete all[name];
  return all;
}

function sign(payload: JWTPayload = claims(), header: Partial<JWSHeaderParameters> = {}, key: CryptoKey = idp.privateKey): Promise<string> {
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid: KID, typ: 'logout+jwt', ...header }).sign(key);
}

function withoutHeader(name: 'typ' | 'kid'): Promise<string> {
  return sign(claims(), { [name]: undefined });
}

const b64url = (json: unknown): string => Buffer.from(JSON.stringify(json)).toString('base64url');

describe('validateLogoutToken (OIDC Back-Channel Logout §2.4 / §2.6)', () => {
  describe('accepts valid logout tokens', () => {
    it('accepts a token with sid only and returns its claims', async () => {
      expect(await validateLogoutToken(await sign(), ctx)).toEqual({
        ok: true,
        claims: { iss: ISSUER, sid: 'sid-1', iat: NOW - 5, exp: NOW + 115, jti: 'jti-1' },
      });
    });

    it('§2.6 step 5: accepts a token with sub only', async () => {
      const result = await validateLogoutToken(await sign(claims({ sub: 'user-1' }, ['sid'])), ctx);
      expect(result).toEqual({ ok: true, claims: { iss: ISSUER, sub: 'user-1', iat: NOW - 5, exp: NOW + 115, jti: 'jti-1' } });
    });

    it('§2.6 step 5: accepts a token with both sub and sid', async () => {
      const result = await validateLogoutToken(await sign(claims({ sub: 'user-1' })), ctx);
      expect(result).toMatchObject({ ok: true, claims: { sub: 'user-1', sid: 'sid-1' } });
    });

    it.each(['logout+jwt', 'application/logout+jwt', 'LOGOUT+JWT', 'JWT', 'application/jwt'])(
      'explicit typing (§2.4): accepts typ %s',
      async (typ) => {
        expect(await validateLogoutToken(await sign(claims(), { typ }), ctx)).toMatchObject({ ok: true });
      },
    );

    it('explicit typing (§2.4): accepts a token without typ, for compatibility', async () => {
      expect(await validateLogoutToken(await withoutHeader('typ'), ctx)).toMatchObject({ ok: true });
    });

    it('§2.6 step 4: accepts aud as an array holding only the client id', async () => {
      expect(await validateLogoutToken(await sign(claims({ aud: [CLIENT_ID] })), ctx)).toMatchObject({ ok: true });
    });

    it('§2.6 step 6: accepts a non-empty object as the event value (SHOULD be {}, MUST be an object)', async () => {
      const payload = claims({ events: { [EVENT]: { reason: 'x' }, 'urn:other': 1 } });
      expect(await validateLogoutToken(await sign(payload), ctx)).toMatchObject({ ok: true });
    });

    it('§2.6 step 2: ignores jku and x5u headers on a token the IdP key signed', async () => {
      const token = await sign(claims(), { jku: 'https://evil.example/jwks.json', x5u: 'https://evil.example/cert.pem' });
      expect(await validateLogoutToken(token, ctx)).toMatchObject({ ok: true });
    });

    it('§2.6 step 2: tries every IdP key when the token has no kid and several keys match', async () => {
      const keys = createLocalJWKSet({ keys: [idp.publicJwk, idpSecond.publicJwk] });
      const token = await sign(claims(), { kid: undefined }, idpSecond.privateKey);
      expect(await validateLogoutToken(token, { ...ctx, keys })).toMatchObject({ ok: true });
    });

    it('§2.6 step 4: accepts exp just passed and iat just ahead within the clock tolerance', async () => {
      expect(await validateLogoutToken(await sign(claims({ iat: NOW + 20, exp: NOW - 20 })), ctx)).toMatchObject({ ok: true });
    });
  });

  describe('token shape', () => {
    it.each([undefined, ''])('refuses a missing or empty token (%p)', async (token) => {
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'missing token' });
    });

    it.each(['a.b', 'a.b.c.d', 'abc', 'a.b.c.d.e.f'])('refuses %s, which is neither 3 nor 5 segments', async (token) => {
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'malformed token' });
    });

    it('§2.6 step 1: refuses a 5-segment JWE, since no ID-token encryption is registered', async () => {
      expect(await validateLogoutToken('eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d', ctx)).toEqual({
        ok: false,
        reason: 'encrypted logout tokens are not supported',
      });
    });

    it('refuses a token longer than 16 KiB', async () => {
      const token = await sign(claims({ pad: 'x'.repeat(16 * 1024) }));
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'token too large' });
    });

    it('refuses a critical header extension it does not understand (RFC 7515 §4.1.11)', async () => {
      const token = await new SignJWT(claims())
        .setProtectedHeader({ alg: 'RS256', kid: KID, crit: ['urn:x'], 'urn:x': 1 })
        .sign(idp.privateKey, { crit: { 'urn:x': true } });
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'not supported' });
    });
  });

  describe('algorithm, key and signature', () => {
    it('§2.6 step 3: refuses alg none', async () => {
      const token = `eyJhbGciOiJub25lIn0.${b64url(claims())}.`;
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'alg not allowed' });
    });

    it('§2.6 step 3: refuses alg none even when the allow-list names it', async () => {
      const token = `eyJhbGciOiJub25lIn0.${b64url(claims())}.`;
      expect(await validateLogoutToken(token, { ...ctx, algorithms: ['RS256', 'none'] })).toEqual({ ok: false, reason: 'alg not allowed' });
    });

    it('§2.6 step 3: refuses HS256 MACed with the client secret when RS256 is expected', async () => {
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(CLIENT_SECRET));
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'alg not allowed' });
      expect(await validateLogoutToken(token, { ...ctx, algorithms: ['RS256', 'HS256'] })).toEqual({
        ok: false,
        reason: 'alg not allowed',
      });
    });

    it('§2.6 step 3: refuses an algorithm outside the allow-list (PS256 when only RS256 is allowed)', async () => {
      const { privateKey } = await generateKeyPair('PS256');
      const token = await new SignJWT(claims()).setProtectedHeader({ alg: 'PS256', kid: KID }).sign(privateKey);
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'alg not allowed' });
    });

    it('§2.6 step 2: refuses a token whose kid is not in the IdP JWKS', async () => {
      const token = await sign(claims(), { kid: 'rotated-away' }, attacker.privateKey);
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'unknown kid' });
    });

    it('§2.6 step 2: refuses a token signed by an attacker key carried in its own jwk header', async () => {
      const token = await sign(claims(), { kid: undefined, jwk: attacker.publicJwk }, attacker.privateKey);
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'bad signature' });
    });

    it('§2.6 step 2: refuses a jwk-header token whose kid names the embedded attacker key', async () => {
      const token = await sign(claims(), { kid: 'attacker-key', jwk: attacker.publicJwk }, attacker.privateKey);
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'unknown kid' });
    });

    it('§2.6 step 2: refuses a token signed by an attacker key published at its jku header', async () => {
      const unknownKid = await sign(claims(), { kid: 'attacker-key', jku: 'https://evil.example/jwks.json' }, attacker.privateKey);
      expect(await validateLogoutToken(unknownKid, ctx)).toEqual({ ok: false, reason: 'unknown kid' });
      const idpKid = await sign(claims(), { jku: 'https://evil.example/jwks.json' }, attacker.privateKey);
      expect(await validateLogoutToken(idpKid, ctx)).toEqual({ ok: false, reason: 'bad signature' });
    });

    it('§2.6 step 2: refuses a bad signature (one byte flipped)', async () => {
      const [header, payload, signature] = (await sign()).split('.') as [string, string, string];
      const bytes = Buffer.from(signature, 'base64url');
      bytes[10] = bytes[10]! ^ 0x01;
      expect(await validateLogoutToken(`${header}.${payload}.${bytes.toString('base64url')}`, ctx)).toEqual({
        ok: false,
        reason: 'bad signature',
      });
    });

    it('§2.6 step 2: refuses a payload swapped under a valid signature', async () => {
      const [header, , signature] = (await sign()).split('.') as [string, string, string];
      const token = `${header}.${b64url(claims({ sid: 'someone-else' }))}.${signature}`;
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'bad signature' });
    });

    it('§2.6 step 2: refuses an attacker signature when no kid is sent and several IdP keys match', async () => {
      const keys = createLocalJWKSet({ keys: [idp.publicJwk, idpSecond.publicJwk] });
      const token = await sign(claims(), { kid: undefined }, attacker.privateKey);
      expect(await validateLogoutToken(token, { ...ctx, keys })).toEqual({ ok: false, reason: 'bad signature' });
    });
  });

  describe('iss, aud, iat, exp', () => {
    it.each<[string, JWTPayload, string]>([
      ['wrong iss', claims({ iss: 'https://evil.example' }), 'iss mismatch'],
      ['iss with a trailing slash', claims({ iss: `${ISSUER}/` }), 'iss mismatch'],
      ['missing iss', claims({}, ['iss']), 'iss missing'],
      ['wrong aud', claims({ aud: 'another-client' }), 'aud mismatch'],
      ['missing aud', claims({}, ['aud']), 'aud missing'],
      ['extra untrusted aud', claims({ aud: [CLIENT_ID, 'another-client'] }), 'untrusted extra audience'],
      ['iat missing', claims({}, ['iat']), 'iat missing'],
      ['iat not a number', claims({ iat: String(NOW) }), 'iat invalid'],
      ['iat in the future beyond the tolerance', claims({ iat: NOW + 120, exp: NOW + 240 }), 'iat in the future'],
      ['iat older than maxAgeSeconds', claims({ iat: NOW - 400, exp: NOW + 60 }), 'iat too old'],
      ['exp missing (REQUIRED since errata 1)', claims({}, ['exp']), 'exp missing'],
      ['exp past beyond the tolerance', claims({ iat: NOW - 100, exp: NOW - 31 }), 'expired'],
    ])('§2.6 step 4: refuses %s', async (_name, payload, reason) => {
      expect(await validateLogoutToken(await sign(payload), ctx)).toEqual({ ok: false, reason });
    });

    it('§2.6 step 4: honours a configured maxAgeSeconds', async () => {
      const token = await sign(claims({ iat: NOW - 100 }));
      expect(await validateLogoutToken(token, { ...ctx, maxAgeSeconds: 60 })).toEqual({ ok: false, reason: 'iat too old' });
    });

    it('§2.6 step 4: refuses an exp that JSON turns into Infinity', async () => {
      const json = JSON.stringify(claims({ exp: 0 })).replace('"exp":0', '"exp":1e400');
      const token = await new CompactSign(new TextEncoder().encode(json))
        .setProtectedHeader({ alg: 'RS256', kid: KID })
        .sign(idp.privateKey);
      expect(await validateLogoutToken(token, ctx)).toEqual({ ok: false, reason: 'iat or exp not finite' });
    });
  });

  describe('logout-token claims', () => {
    it('§2.6 step 5: refuses a token with neither sub nor sid', async () => {
      expect(await validateLogoutToken(await sign(claims({}, ['sid'])), ctx)).toEqual({ ok: false, reason: 'neither sub nor sid' });
    });

    it.each<[string, Record<string, unknown>, string]>([
      ['an empty sid', { sid: '' }, 'sid invalid'],
      ['a numeric sub', { sub: 42 }, 'sub invalid'],
    ])('§2.6 step 5: refuses %s', async (_name, overrides, reason) => {
      expect(await validateLogoutToken(await sign(claims(overrides)), ctx)).toEqual({ ok: false, reason });
    });

    it('§2.6 step 6: refuses a token without events', async () => {
      expect(await validateLogoutToken(await sign(claims({}, ['events'])), ctx)).toEqual({
        ok: false,
        reason: 'events missing or not an object',
      });
    });

    it.each<[string, unknown]>([
      ['a string', EVENT],
      ['an array', [EVENT]],
      ['null', null],
    ])('§2.6 step 6: refuses events that is %s, not an object', async (_name, events) => {
      expect(await validateLogoutToken(await sign(claims({ events })), ctx)).toEqual({
        ok: false,
        reason: 'events missing or not an object',
      });
    });

    it.each<[string, Record<string, unknown>]>([
      ['missing', { 'http://schemas.openid.net/event/other': {} }],
      ['""', { [EVENT]: '' }],
      ['true', { [EVENT]: true }],
      ['[]', { [EVENT]: [] }],
      ['null', { [EVENT]: null }],
    ])('§2.6 step 6: refuses a back-channel logout event member that is %s', async (_name, events) => {
      expect(await validateLogoutToken(await sign(claims({ events })), ctx)).toEqual({
        ok: false,
        reason: 'back-channel logout event missing or not an object',
      });
    });

    it('§2.6 step 7: refuses a token carrying a nonce', async () => {
      expect(await validateLogoutToken(await sign(claims({ nonce: 'n-1' })), ctx)).toEqual({ ok: false, reason: 'nonce present' });
    });

    it('§2.6 step 7: refuses an ID token posted as a logout token', async () => {
      const idToken = await sign(
        { iss: ISSUER, aud: CLIENT_ID, sub: 'user-1', sid: 'sid-1', nonce: 'n-1', iat: NOW, exp: NOW + 300 },
        { typ: 'JWT' },
      );
      expect(await validateLogoutToken(idToken, ctx)).toMatchObject({ ok: false });
    });

    it.each<[string, Record<string, unknown>, string[]]>([
      ['missing', {}, ['jti']],
      ['empty', { jti: '' }, []],
      ['not a string', { jti: 7 }, []],
    ])('§2.6 step 8: refuses a jti that is %s', async (_name, overrides, omit) => {
      expect(await validateLogoutToken(await sign(claims(overrides, omit)), ctx)).toEqual({ ok: false, reason: 'jti missing' });
    });

    it.each(['at+jwt', 'application/at+jwt', 'dpop+jwt', 'secevent+jwt', 'JOSE'])('explicit typing (§2.4): refuses typ %s', async (typ) => {
      expect(await validateLogoutToken(await sign(claims(), { typ }), ctx)).toEqual({ ok: false, reason: 'typ not accepted' });
    });
  });

  describe('never throws', () => {
    it.each<[string, unknown]>([
      ['undefined', undefined],
      ['null', null],
      ['a number', 42],
      ['an object', { logout_token: 'x' }],
      ['an array', ['a.b.c']],
      ['a.b.c', 'a.b.c'],
      ['dots only', '..'],
      ['a header that is a JSON array', `${b64url([1])}.${b64url(claims())}.sig`],
      ['a payload that is not JSON', `${b64url({ alg: 'RS256', kid: KID })}.bm90IGpzb24.c2ln`],
      ['a 20 KiB string', 'x'.repeat(20 * 1024)],
      ['a 20 KiB three-segment string', `${'a'.repeat(7000)}.${'b'.repeat(7000)}.${'c'.repeat(7000)}`],
    ])('answers {ok:false} for %s', async (_name, token) => {
      await expect(validateLogoutToken(token, ctx)).resolves.toMatchObject({ ok: false });
    });

    it('answers {ok:false} when the clock is not a number', async () => {
      await expect(validateLogoutToken(await sign(), { ...ctx, nowSeconds: Number.NaN })).resolves.toEqual({
        ok: false,
        reason: 'invalid',
      });
    });

    it('answers {ok:false} when the key getter fails', async () => {
      const keys = (): Promise<never> => Promise.reject(new Error('jwks_uri unreachable'));
      await expect(validateLogoutToken(await sign(), { ...ctx, keys })).resolves.toEqual({ ok: false, reason: 'invalid' });
    });
  });
});
