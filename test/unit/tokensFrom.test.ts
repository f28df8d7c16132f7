import { tokensFrom } from '../../src/tokens/vault';
import { toTokenSet } from '../../src/idp/idp';

const base = { accessToken: 'at2', refreshToken: undefined, idToken: undefined, claims: undefined };
const T = { skewSeconds: 30, marginSeconds: 0 };
/** An unsigned JWT-shaped access token: only its `exp` is read. */
const jwt = (payload: object) => `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2ln`;

describe('tokensFrom (RFC 6749 §5.1, §6)', () => {
  it('computes expiry from the time of receipt and refreshes a skew ahead of it', () => {
    const t = tokensFrom({ ...base, expiresIn: 300 }, 1_000_000, T);
    expect(t.expiresAt).toBe(1_000_000 + 300_000);
    expect(t.refreshAt).toBe(1_000_000 + 270_000);
  });

  it('keeps the old refresh token when the IdP returns none (RFC 6749 §6)', () => {
    const prev = tokensFrom({ ...base, accessToken: 'at1', refreshToken: 'rt1', idToken: 'id1', expiresIn: 60 }, 0, T);
    const next = tokensFrom({ ...base, expiresIn: 60 }, 1000, T, prev);
    expect(next.refreshToken).toBe('rt1');
    expect(next.idToken).toBe('id1');
    expect(next.accessToken).toBe('at2');
  });

  it('replaces the refresh token when a rotated one arrives', () => {
    const prev = tokensFrom({ ...base, refreshToken: 'rt1', expiresIn: 60 }, 0, T);
    expect(tokensFrom({ ...base, refreshToken: 'rt2', expiresIn: 60 }, 1000, T, prev).refreshToken).toBe('rt2');
  });

  it('never refreshes on every request when tokens live shorter than the skew', () => {
    const t = tokensFrom({ ...base, expiresIn: 4 }, 0, T);
    expect(t.refreshAt).toBe(2000);
  });

  it('assumes five minutes when the IdP sends no expires_in', () => {
    expect(tokensFrom({ ...base, expiresIn: undefined }, 0, T).expiresAt).toBe(300_000);
  });

  it("takes a JWT access token's own exp when it comes before expires_in counted from the request", () => {
    // Issued at 1 000 000.9 s on the IdP's clock: exp is whole seconds, 0.9 s before expires_in says.
    const t = tokensFrom({ ...base, accessToken: jwt({ exp: 1_000_060 }), expiresIn: 60 }, 1_000_000_900, T);
    expect(t.expiresAt).toBe(1_000_060_000);
  });

  it('keeps expires_in when a JWT has no exp or an exp later than expires_in says', () => {
    const at = 1_000_000_000;
    for (const payload of [{}, { exp: 'soon' }, { exp: 1_000_600 }])
      expect(tokensFrom({ ...base, accessToken: jwt(payload), expiresIn: 60 }, at, T).expiresAt).toBe(at + 60_000);
    expect(tokensFrom({ ...base, accessToken: 'not.a-jwt.!', expiresIn: 60 }, at, T).expiresAt).toBe(at + 60_000);
  });

  it('lets an exp far earlier than expires_in (an IdP clock far behind ours) shorten the token by 5 s at most', () => {
    const at = 1_000_000_000;
    expect(tokensFrom({ ...base, accessToken: jwt({ exp: 999_000 }), expiresIn: 60 }, at, T).expiresAt).toBe(at + 55_000);
    expect(tokensFrom({ ...base, accessToken: jwt({ exp: 999_000 }), expiresIn: 8 }, at, T).expiresAt).toBe(at + 6_000);
  });

  it('stops using the token a margin before its end, and refreshes no later than that', () => {
    const t = tokensFrom({ ...base, expiresIn: 300 }, 0, { skewSeconds: 30, marginSeconds: 2 });
    expect(t.usableUntil).toBe(298_000);
    expect(t.refreshAt).toBe(270_000);
    const noSkew = tokensFrom({ ...base, expiresIn: 300 }, 0, { skewSeconds: 0, marginSeconds: 2 });
    expect(noSkew.refreshAt).toBe(298_000);
  });

  it('keeps the margin to a quarter of a short-lived token', () => {
    const t = tokensFrom({ ...base, expiresIn: 4 }, 0, { skewSeconds: 1, marginSeconds: 2 });
    expect(t.usableUntil).toBe(3000);
    expect(t.refreshAt).toBe(3000);
  });
});

describe('toTokenSet (RFC 6749 §5.1: the lifetime is expires_in as sent)', () => {
  it("takes expires_in as the IdP sent it, not openid-client's remaining whole seconds (0 for a 1 s token a millisecond later)", () => {
    type Response = Parameters<typeof toTokenSet>[0];
    const response = {
      access_token: 'at',
      token_type: 'bearer' as Lowercase<string>,
      expires_in: 1,
      expiresIn: () => 0,
      claims: () => undefined,
    };
    expect(toTokenSet(response as unknown as Response).expiresIn).toBe(1);
    const without = { ...response, expires_in: undefined, expiresIn: () => undefined };
    expect(toTokenSet(without as unknown as Response).expiresIn).toBeUndefined();
  });
});
