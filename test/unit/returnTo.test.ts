import { parseReturnTo } from '../../src/auth/returnTo';
import { OPEN_REDIRECT_PAYLOADS } from '../support/payloads';

const ORIGIN = 'https://app.example';

describe('parseReturnTo (no open redirect through returnTo)', () => {
  it.each([
    ['/dashboard', '/dashboard'],
    ['/a/b?x=1#frag', '/a/b?x=1#frag'],
    ['/', '/'],
    ['/caf%C3%A9', '/caf%C3%A9'],
  ])('keeps the same-origin path %s', (raw, expected) => {
    expect(parseReturnTo(raw, ORIGIN)).toBe(expected);
  });

  // Every open-redirect payload of test/support/payloads.ts.
  it.each([...OPEN_REDIRECT_PAYLOADS, '', 'relative/path'])('refuses %s', (raw) => {
    expect(parseReturnTo(raw, ORIGIN)).toBeUndefined();
  });

  it('refuses anything that is not a single string (duplicated query parameters arrive as arrays)', () => {
    expect(parseReturnTo(['/a', '/b'], ORIGIN)).toBeUndefined();
    expect(parseReturnTo(undefined, ORIGIN)).toBeUndefined();
    expect(parseReturnTo({ x: '/a' }, ORIGIN)).toBeUndefined();
  });
});
