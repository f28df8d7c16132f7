import { sessionCookieOk } from '../../src/http/cookieGuard';

const id = 'A'.repeat(43);
const sig = 'b+/'.repeat(14) + 'c';

describe('sessionCookieOk (the cookie is untrusted input)', () => {
  it('accepts express-session signed ids, raw or URL-encoded', () => {
    expect(sessionCookieOk(`s:${id}.${sig}`)).toBe(true);
    expect(sessionCookieOk(encodeURIComponent(`s:${id}.${sig}`))).toBe(true);
  });

  // Malformed values: anything but the signed-id shape is refused before a store lookup.
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
