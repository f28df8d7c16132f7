/**
 * The refresh service's decisions, table by table: when a call refreshes, when a record read while waiting
 * settles the wait, what a call gets when no refresh can happen, and what each refusal means for the session.
 * The end-to-end suites (refresh-*.test.ts) run the same rules against oidc-provider and Redis.
 */
import type { RefreshFailure } from '../../src/idp/classify';
import { afterFailure, fallback, namesAnotherUser, plan, settles } from '../../src/tokens/refreshRules';
import type { AccessToken } from '../../src/tokens/vault';

/** Refresh point at 100, usable until 110, expires at 120. */
const token: AccessToken = { accessToken: 'at', refreshAt: 100, usableUntil: 110, expiresAt: 120 };

describe('plan: what a call does with the token it found', () => {
  it.each([
    [0, 'send'],
    [99, 'send'],
    [100, 'send-and-refresh'],
    [109, 'send-and-refresh'],
    [110, 'refresh'],
    [500, 'refresh'],
  ] as const)('at %d: %s', (now, expected) => expect(plan(token, now)).toBe(expected));

  it('a token never obtained (an API’s first call) is refreshed first', () => {
    expect(plan({ accessToken: '', refreshAt: 0, usableUntil: 0, expiresAt: 0 }, 1)).toBe('refresh');
  });

  it('a record written before usableUntil existed is usable until it expires', () => {
    const old: AccessToken = { accessToken: 'at', refreshAt: 100, expiresAt: 120 };
    expect(plan(old, 119)).toBe('send-and-refresh');
    expect(plan(old, 120)).toBe('refresh');
  });
});

describe('settles: a record read while a refresh was due', () => {
  it('a token before its refresh point settles it, whatever the version', () => {
    expect(settles(token, 3, 3, 50)).toBe(true);
  });
  it('the same version past its refresh point does not: the refresh is still to do', () => {
    expect(settles(token, 3, 3, 105)).toBe(false);
  });
  it('a newer version settles it until the token expires, even inside its skew (a slow IdP’s answer)', () => {
    expect(settles(token, 4, 3, 115)).toBe(true);
    expect(settles(token, 4, 3, 120)).toBe(false);
  });
  it('a token the upstream refused settles nothing however fresh; any other token does', () => {
    expect(settles(token, 4, 3, 50, 'at')).toBe(false);
    expect(settles(token, 3, 3, 115, 'older')).toBe(true);
  });
});

describe('fallback: when no refresh can happen', () => {
  it.each([
    [105, undefined, 'send'],
    [110, undefined, 'unavailable'],
    [105, 'at', 'unavailable'],
    [105, 'other', 'send'],
  ] as const)('at %d, refused %s: %s', (now, rejected, expected) => expect(fallback(token, now, rejected)).toBe(expected));
});

describe('afterFailure: what a refused refresh means for the session', () => {
  const cases: Array<[RefreshFailure, boolean, ReturnType<typeof afterFailure>]> = [
    ['invalid_grant', false, 'end-unless-rotated'],
    ['invalid_grant', true, 'end-unless-rotated'],
    ['foreign_issuer', false, 'end'],
    ['invalid_target', true, 'end'],
    ['invalid_scope', true, 'end'],
    // the login's own token names no resource: the IdP's refusal there is a configuration problem, not a dead grant
    ['invalid_target', false, 'keep'],
    ['invalid_scope', false, 'keep'],
    ['invalid_client', false, 'keep'],
    ['idp_error', true, 'keep'],
    ['timeout', false, 'keep'],
    ['network', false, 'keep'],
  ];
  it.each(cases)('%s (for an API: %s) → %s', (failure, forAudience, expected) => expect(afterFailure(failure, forAudience)).toBe(expected));
});

describe('namesAnotherUser: a refreshed ID token', () => {
  const user = { iss: 'https://idp', sub: 'alice' };
  it.each([
    [undefined, false],
    [{ iss: 'https://idp', sub: 'alice', aud: 'x' }, false],
    [{ iss: 'https://idp', sub: 'mallory' }, true],
    [{ iss: 'https://other', sub: 'alice' }, true],
    [{ sub: 'alice' }, true],
  ] as const)('%j → %s', (claims, expected) => expect(namesAnotherUser(claims, user)).toBe(expected));
});
