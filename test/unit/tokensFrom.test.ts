import { tokensFrom } from '../../src/tokens/vault';
import { toTokenSet } from '../../src/oidc/idp';

const base = { accessToken: 'at2', refreshToken: undefined, idToken: undefined, claims: undefined };

describe('tokensFrom (RFC 6749 §5.1, §6)', () => {
  it('computes expiry from the time of receipt and refreshes a skew ahead of it', () => {
    const t = tokensFrom({ ...base, expiresIn: 300 }, 1_000_000, 30);
    expect(t.expiresAt).toBe(1_000_000 + 300_000);
    expect(t.refreshAt).toBe(1_000_000 + 270_000);
  });

  it('keeps the old refresh token when the IdP returns none (RFC 6749 §6)', () => {
    const prev = tokensFrom({ ...base, accessToken: 'at1', refreshToken: 'rt1', idToken: 'id1', expiresIn: 60 }, 0, 30);
    const next = tokensFrom({ ...base, expiresIn: 60 }, 1000, 30, prev);
    expect(next.refreshToken).toBe('rt1');
    expect(next.idToken).toBe('id1');
    expect(next.accessToken).toBe('at2');
  });

  it('replaces the refresh token when a rotated one arrives', () => {
    const prev = tokensFrom({ ...base, refreshToken: 'rt1', expiresIn: 60 }, 0, 30);
    expect(tokensFrom({ ...base, refreshToken: 'rt2', expiresIn: 60 }, 1000, 30, prev).refreshToken).toBe('rt2');
  });

  it('never refreshes on every request when tokens live shorter than the skew', () => {
    const t = tokensFrom({ ...base, expiresIn: 4 }, 0, 30);
    expect(t.refreshAt).toBe(2000);
  });

  it('assumes five minutes when the IdP sends no expires_in', () => {
    expect(tokensFrom({ ...base, expiresIn: undefined }, 0, 30).expiresAt).toBe(300_000);
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
