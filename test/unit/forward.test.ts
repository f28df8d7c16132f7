import { dpopNonceChallenge, invalidTokenChallenge, isGatehouseCookie } from '../../src/api/forward';
import { allowedSetCookies } from '../../src/api/headers';

describe('invalidTokenChallenge: a Bearer challenge saying the token is not good (RFC 6750 §3.1)', () => {
  it.each([
    'Bearer error="invalid_token"',
    'Bearer realm="api", error="invalid_token", error_description="expired"',
    'bearer Realm="api",Error = "invalid_token"',
    'Bearer error=invalid_token',
    'Basic realm="x", Bearer realm="api", error="invalid_token"',
    'Bearer realm="a, error=\\"x\\"", error="invalid_token"',
  ])('%s → yes', (header) => expect(invalidTokenChallenge(header)).toBe(true));

  it.each([
    undefined,
    '',
    'Bearer',
    'Bearer realm="api"',
    'Bearer error="insufficient_scope"',
    'Bearer error="invalid_request"',
    'Bearer error="INVALID_TOKEN"',
    'DPoP error="invalid_token"',
    'Bearer realm="api", DPoP error="invalid_token"',
    'Bearer realm="error=\\"invalid_token\\""',
    'Basic error="invalid_token"',
  ])('%s → no', (header) => expect(invalidTokenChallenge(header)).toBe(false));
});

describe('challenges to a DPoP-bound token (RFC 9449 §7.1, §9)', () => {
  it.each(['DPoP error="invalid_token"', 'Bearer realm="api", DPoP algs="ES256", error="invalid_token"', 'dpop Error=invalid_token'])(
    '%s: the token is not good',
    (header) => expect(invalidTokenChallenge(header, 'dpop')).toBe(true),
  );
  it.each([
    'Bearer error="invalid_token"',
    'DPoP error="use_dpop_nonce"',
    'DPoP error="invalid_dpop_proof"',
    'DPoP realm="error=invalid_token"',
  ])('%s: not a refused token', (header) => expect(invalidTokenChallenge(header, 'dpop')).toBe(false));
  it.each(['DPoP error="use_dpop_nonce"', 'Bearer realm="api", DPoP error=use_dpop_nonce'])('%s: asks for a nonce', (header) =>
    expect(dpopNonceChallenge(header)).toBe(true),
  );
  it.each([undefined, 'Bearer error="use_dpop_nonce"', 'DPoP error="invalid_token"', 'DPoP error="USE_DPOP_NONCE"'])(
    '%s: does not ask for a nonce',
    (header) => expect(dpopNonceChallenge(header)).toBe(false),
  );
});

describe('the gateway’s own cookie names, which no upstream may set', () => {
  it.each([
    'gatehouse',
    '__Host-Http-gatehouse',
    'gatehouse-tx',
    'gatehouse-tx-AbCdEf0123456789',
    '__Host-gatehouse-tx-x',
    'GATEHOUSE',
    '__host-http-gatehouse',
  ])('%s is ours', (name) => expect(isGatehouseCookie(name)).toBe(true));
  it.each(['gatehouse2', 'my-gatehouse', '__Host-gatehouse', 'theme', ''])('%s is not', (name) =>
    expect(isGatehouseCookie(name)).toBe(false),
  );

  it('a Set-Cookie is judged on the name a browser stores and on the one it sends back', () => {
    const lines = ['a=1', 'gatehouse=x; Path=/', '=gatehouse=x', ' gatehouse = x', 'gatehouse', '==gatehouse-tx-1=x', 'b=gatehouse'];
    expect(allowedSetCookies(lines, isGatehouseCookie)).toEqual(['a=1', 'b=gatehouse']);
  });
});
