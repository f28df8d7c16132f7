import { createSecretKey } from 'node:crypto';
import { verifiedId } from '../../src/api/sessionLoader';

// express-session's own signer (no type declarations are published for it).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { sign } = require('cookie-signature') as { sign: (value: string, secret: string) => string };

const [A, B] = ['a-secret-of-at-least-thirty-two-characters', 'b-secret-of-at-least-thirty-two-characters'];
const keys = [A, B].map((s) => createSecretKey(Buffer.from(s, 'utf8')));
const id = 'x'.repeat(43);

describe('sessionLoader.verifiedId (the /api loader accepts only cookies signed with a configured secret)', () => {
  it('accepts exactly what express-session signs (cookie-signature), under the current or an older secret', () => {
    expect(verifiedId(`s:${sign(id, A)}`, keys)).toBe(id);
    expect(verifiedId(`s:${sign(id, B)}`, keys)).toBe(id);
  });

  it('refuses a foreign secret, a changed id, a changed or truncated signature, and an unsigned value', () => {
    const good = `s:${sign(id, A)}`;
    expect(verifiedId(`s:${sign(id, 'c-secret-of-at-least-thirty-two-characters')}`, keys)).toBeUndefined();
    expect(verifiedId(good.replace('s:x', 's:y'), keys)).toBeUndefined();
    expect(verifiedId(good.slice(0, -1) + (good.endsWith('A') ? 'B' : 'A'), keys)).toBeUndefined();
    expect(verifiedId(good.slice(0, -2), keys)).toBeUndefined();
    expect(verifiedId(sign(id, A), keys)).toBeUndefined();
    expect(verifiedId(`s:${id}`, keys)).toBeUndefined();
  });
});
