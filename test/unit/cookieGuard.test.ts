import { sessionCookieOk } from '../../src/http/cookieGuard';

const id = 'A'.repeat(43);
const sig = 'b+/'.repeat(14) + 'c';

describe('sessionCookieOk (R24: the cookie is untrusted input)', () => {
  it('accepts express-session signed ids, raw or URL-encoded', () => {
    expect(sessionCookieOk(`s:${id}.${sig}`)).toBe(true);
    expect(sessionCookieOk(encodeURIComponent(`s:${id}.${sig}`))).toBe(true);
  });

  // STANDARDS.md §2 row 3.
  it.each([
    'abc',
    'x'.repeat(4096),
    '*',
    '%00',
    '%0d%0a',
    '"s:abc.def"',
    'sé',
    `s:${id}`,
    `s:${id}.${sig}x`,
    `s:${id.slice(1)}!.${sig}`,
    '%E0%A4%A',
    's:eyJhbGciOi.x',
  ])('refuses %s', (raw) => {
    expect(sessionCookieOk(raw)).toBe(false);
  });
});
