import { deriveKey, keyedHash, open, randomId, seal } from '../../src/crypto/seal';

describe('seal/open (AES-256-GCM at rest)', () => {
  const key = deriveKey('a-secret-of-at-least-thirty-two-chars!', 'test');

  it('round-trips and never contains the plaintext', () => {
    const sealed = seal(key, 'refresh-token-value', 'gatehouse:t:{h}');
    expect(sealed).not.toContain('refresh-token-value');
    expect(open(key, sealed, 'gatehouse:t:{h}')).toBe('refresh-token-value');
  });

  it('refuses a value moved under another key name (the name is authenticated data)', () => {
    const sealed = seal(key, 'x', 'gatehouse:t:{a}');
    expect(open(key, sealed, 'gatehouse:t:{b}')).toBeUndefined();
  });

  it('refuses another key, a flipped bit, truncation and garbage', () => {
    const sealed = seal(key, 'x', 'k');
    expect(open(deriveKey('another-secret-of-thirty-two-characters', 'test'), sealed, 'k')).toBeUndefined();
    const raw = Buffer.from(sealed.slice(3), 'base64url');
    raw[raw.length - 1] = raw[raw.length - 1]! ^ 1;
    expect(open(key, `v1.${raw.toString('base64url')}`, 'k')).toBeUndefined();
    expect(open(key, sealed.slice(0, 10), 'k')).toBeUndefined();
    expect(open(key, 'not sealed', 'k')).toBeUndefined();
  });

  it('uses a fresh IV for every seal', () => {
    expect(seal(key, 'same', 'k')).not.toBe(seal(key, 'same', 'k'));
  });

  it('makes 256-bit base64url ids that never repeat', () => {
    const ids = new Set(Array.from({ length: 1000 }, randomId));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('derives different keyed hashes for different keys', () => {
    expect(keyedHash(key, 'sid').equals(keyedHash(deriveKey('x'.repeat(32), 'test'), 'sid'))).toBe(false);
  });
});
