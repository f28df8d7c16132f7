import { parseReturnTo } from '../../src/oidc/returnTo';

const ORIGIN = 'https://app.example';

describe('parseReturnTo (R19: no open redirect through returnTo)', () => {
  it.each([
    ['/dashboard', '/dashboard'],
    ['/a/b?x=1#frag', '/a/b?x=1#frag'],
    ['/', '/'],
    ['/caf%C3%A9', '/caf%C3%A9'],
  ])('keeps the same-origin path %s', (raw, expected) => {
    expect(parseReturnTo(raw, ORIGIN)).toBe(expected);
  });

  // STANDARDS.md §2 row 18, every payload.
  it.each([
    'https://evil.example',
    '//evil.example',
    '/\\evil.example',
    '\\/evil.example',
    '/%2F%2Fevil.example',
    'https:evil.example',
    'javascript:alert(1)',
    'data:text/html,x',
    '/%09/evil.example',
    'http://app.example@evil.example',
    '/x%0d%0aSet-Cookie:a=b',
    '/x\r\nSet-Cookie:a=b',
    `/${'a'.repeat(10 * 1024)}`,
    '',
    'relative/path',
  ])('refuses %s', (raw) => {
    expect(parseReturnTo(raw, ORIGIN)).toBeUndefined();
  });

  it('refuses anything that is not a single string (duplicated query parameters arrive as arrays)', () => {
    expect(parseReturnTo(['/a', '/b'], ORIGIN)).toBeUndefined();
    expect(parseReturnTo(undefined, ORIGIN)).toBeUndefined();
    expect(parseReturnTo({ x: '/a' }, ORIGIN)).toBeUndefined();
  });
});
