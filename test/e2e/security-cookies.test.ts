/**
 * The session cookie as untrusted input: whatever arrives in the Cookie header, the answer is 401 (or
 * 400/431), never 5xx, never someone's session, and nothing is written to Redis.
 */
import request from 'supertest';
import { loginAs } from '../support/login';
import { SESSION_SECRET, SPA, startStack, type Stack } from '../support/stack';
import {
  dumpAll,
  forgedCookieValue,
  issuedCookie,
  cookiesNamed,
  leaks,
  parseSetCookie,
  rawSocket,
  recordResponses,
  scannable,
  sessionIdOf,
  setCookies,
  settle,
  signedCookieValue,
  startLogin,
  tokenForms,
  type Recorded,
} from '../support/security';

const UNAUTHENTICATED = { error: 'unauthenticated', message: 'No valid session. Log in at /auth/login.' };

describe('security: the session cookie as untrusted input', () => {
  let s: Stack;
  let recorded: Recorded[];
  /** `gatehouse=<value>` of a live session */
  let valid: string;
  let validValue: string;

  beforeAll(async () => {
    s = await startStack();
    recorded = recordResponses(s.gw.server);
    const cb = await loginAs(s.gw.agent(), s.idp, 'cookie-owner');
    validValue = issuedCookie(cb, 'gatehouse').value;
    valid = `gatehouse=${validValue}`;
  });
  afterAll(() => s.close());

  const gw = () => request(s.gw.server);
  const snapshot = async () => (await dumpAll(s)).map((e) => `${e.key} ${e.value}`).sort();

  async function expectStillValid() {
    const r = await gw().get('/auth/session').set(SPA).set('Cookie', valid);
    expect(r.status).toBe(200);
    expect((r.body as { user: { sub: string } }).user.sub).toBe('cookie-owner');
  }

  it('no cookie → 401 unauthenticated JSON, no redirect, no upstream or IdP call', async () => {
    const upstreamBefore = s.upstream.requests.length;
    const tokenBefore = s.idp.tokenRequests.length;
    const r = await gw().get('/api/x').set(SPA);
    expect(r.status).toBe(401);
    expect(r.body).toEqual(UNAUTHENTICATED);
    expect(r.headers.location).toBeUndefined();
    expect(r.headers['cache-control']).toBe('no-store');
    expect(cookiesNamed(r, 'gatehouse')).toHaveLength(0); // nothing to clear
    expect(s.upstream.requests.length).toBe(upstreamBefore);
    expect(s.idp.tokenRequests.length).toBe(tokenBefore);
  });

  it.each([
    ['a random id with a random signature', () => forgedCookieValue()],
    [
      'an id never issued, correctly signed with the real secret',
      () => signedCookieValue('never-issued-0123456789abcdefghijklmnopqrstu', SESSION_SECRET),
    ],
  ])('%s → 401 with a clearing Set-Cookie and no Redis write', async (_name, make) => {
    const before = await snapshot();
    const upstreamBefore = s.upstream.requests.length;
    for (const path of ['/api/x', '/auth/session']) {
      const r = await gw().get(path).set(SPA).set('Cookie', `gatehouse=${make()}`);
      expect(r.status).toBe(401);
      expect(r.body).toEqual(UNAUTHENTICATED);
      const cleared = cookiesNamed(r, 'gatehouse');
      expect(cleared).toHaveLength(1);
      expect(cleared[0]!.value).toBe('');
      expect(cleared[0]!.attrs.get('max-age')).toBe('0');
      expect(cleared[0]!.attrs.get('path')).toBe('/');
    }
    expect(await snapshot()).toEqual(before);
    expect(s.upstream.requests.length).toBe(upstreamBefore);
  });

  describe('malformed session cookies → 401 or 400, never 5xx', () => {
    const malformed: Array<[string, string]> = [
      ['abc', 'abc'],
      ['4 KiB', 'A'.repeat(4096)],
      ['*', '*'],
      ['%00', '%00'],
      ['%0d%0a', '%0d%0a'],
      ['a NUL-ended valid-looking id', `s%3A${'a'.repeat(43)}%00.${'b'.repeat(43)}`],
      ['double quotes', '"s:abc.def"'],
      ['a quoted valid value', '"VALID"'],
      ['latin-1 bytes', 's%3Aé.ü'],
      ['empty', ''],
      ['s: garbage', 's:garbage.garbage'],
      ['s: with an empty id', 's%3A.sig'],
      ['s: without a signature', `s%3A${'a'.repeat(43)}`],
      ['the valid value with a flipped signature byte', 'FLIPPED'],
      ['the valid value with a suffix', 'VALID-suffix'],
      ['the valid value, lower-cased', 'LOWER'],
      ['a broken percent escape', 's%3A%zz.%'],
      ['JSON', '{"id":"admin"}'],
      ['a JWT', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.'],
    ];

    const resolve = (v: string) =>
      v === 'VALID'
        ? validValue
        : v === '"VALID"'
          ? `"${validValue}"`
          : v === 'VALID-suffix'
            ? `${validValue}x`
            : v === 'LOWER'
              ? validValue.toLowerCase()
              : v === 'FLIPPED'
                ? validValue.slice(0, -1) + (validValue.endsWith('A') ? 'B' : 'A')
                : v;

    it.each(malformed)('%s', async (_name, v) => {
      const before = await snapshot();
      for (const path of ['/api/x', '/auth/session']) {
        const r = await gw()
          .get(path)
          .set(SPA)
          .set('Cookie', `other=1; gatehouse=${resolve(v)}`);
        expect([400, 401]).toContain(r.status);
        if (r.status === 401) {
          expect(r.body).toEqual(UNAUTHENTICATED);
          // a cookie that names no live session is cleared
          expect(cookiesNamed(r, 'gatehouse').map((c) => [c.value, c.attrs.get('max-age')])).toEqual([['', '0']]);
        }
      }
      expect(await snapshot()).toEqual(before);
    });

    it('raw non-ASCII (UTF-8) and control bytes in the Cookie header', async () => {
      for (const value of [Buffer.from('s:☃💥.ünïcödé', 'utf8'), Buffer.from([0x73, 0x3a, 0x01, 0x7f, 0xff, 0xfe])]) {
        const req = Buffer.concat([
          Buffer.from(`GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:${s.gw.server.port}\r\nX-CSRF: 1\r\nConnection: close\r\nCookie: gatehouse=`),
          value,
          Buffer.from('\r\n\r\n'),
        ]);
        const r = await rawSocket(s.gw.server.port, req);
        expect([400, 401]).toContain(r.status);
      }
      await expectStillValid();
    });

    it('the valid session still works afterwards', expectStillValid);
  });

  it.each([
    ['forged, then valid', () => `gatehouse=${forgedCookieValue()}; ${valid}`],
    ['valid, then forged', () => `${valid}; gatehouse=${forgedCookieValue()}`],
    ['valid twice', () => `${valid}; ${valid}`],
    ['valid, then empty', () => `${valid}; gatehouse=`],
  ])('two session cookies (%s) are never authenticated', async (_name, header) => {
    const upstreamBefore = s.upstream.requests.length;
    for (const path of ['/api/x', '/auth/session']) {
      const r = await gw().get(path).set(SPA).set('Cookie', header());
      expect([400, 401]).toContain(r.status);
    }
    expect(s.upstream.requests.length).toBe(upstreamBefore);
    await expectStillValid();
  });

  it.each([
    'GATEHOUSE',
    'Gatehouse',
    '__Secure-gatehouse',
    '__Host-gatehouse',
    '__Host-Http-gatehouse',
    'sid',
    'connect.sid',
    'gatehouse-tx',
    ' gatehouse2',
  ])('the valid value under the name %j → 401', async (name) => {
    const r = await gw().get('/auth/session').set(SPA).set('Cookie', `${name}=${validValue}`);
    expect(r.status).toBe(401);
    expect(r.body).toEqual(UNAUTHENTICATED);
    await gw().get('/api/x').set(SPA).set('Cookie', `${name}=${validValue}`).expect(401);
  });

  it('the tx cookie value presented as the session cookie → 401', async () => {
    const l = await startLogin(gw());
    const tx = setCookies(l.start)
      .map(parseSetCookie)
      .find((c) => c.name.startsWith('gatehouse-tx-') && c.value !== '')!.value;
    for (const value of [tx, encodeURIComponent(`s:${tx}`), signedCookieValue(tx, SESSION_SECRET)]) {
      const r = await gw().get('/auth/session').set(SPA).set('Cookie', `gatehouse=${value}`);
      expect(r.status).toBe(401);
      expect(r.body).toEqual(UNAUTHENTICATED);
    }
  });

  it('a 20 KiB Cookie header → 431 or 400, no upstream call, and the process keeps serving', async () => {
    const upstreamBefore = s.upstream.requests.length;
    const big = `${valid}; filler=${'x'.repeat(20 * 1024)}`;
    const r = await rawSocket(
      s.gw.server.port,
      `GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:${s.gw.server.port}\r\nX-CSRF: 1\r\nCookie: ${big}\r\nConnection: close\r\n\r\n`,
    );
    expect([400, 431]).toContain(r.status);
    expect(s.upstream.requests.length).toBe(upstreamBefore);
    await gw().get('/healthz').expect(200);
    await expectStillValid();
  });

  it('forged, logged-out and missing sessions get byte-identical 401 answers', async () => {
    const agent = s.gw.agent();
    const cb = await loginAs(agent, s.idp, 'r68');
    const loggedOut = `gatehouse=${issuedCookie(cb, 'gatehouse').value}`;
    await agent.post('/auth/logout').set(SPA).expect(200);

    const ask = async (path: string, cookie: string | undefined) => {
      const req = gw().get(path).set(SPA);
      const r = await (cookie === undefined ? req : req.set('Cookie', cookie));
      // Date and X-Request-Id differ on every answer by design and say nothing about the session.
      const { date: _date, 'x-request-id': _id, ...headers } = r.headers as Record<string, unknown>;
      return { status: r.status, text: r.text, headers };
    };
    for (const path of ['/api/x', '/auth/session']) {
      const forged = await ask(path, `gatehouse=${forgedCookieValue()}`);
      const dead = await ask(path, loggedOut);
      const missing = await ask(path, undefined);
      const garbage = await ask(path, 'gatehouse=abc');
      expect(forged.status).toBe(401);
      expect(forged.text).toBe(JSON.stringify(UNAUTHENTICATED));
      for (const other of [dead, missing, garbage]) {
        expect(other.status).toBe(401);
        expect(Buffer.from(other.text)).toEqual(Buffer.from(forged.text));
      }
      // with a cookie sent, even the headers (clearing Set-Cookie included) are the same
      expect(dead.headers).toEqual(forged.headers);
      expect(garbage.headers).toEqual(forged.headers);
      const { ['set-cookie']: _sc, ...missingRest } = missing.headers;
      const { ['set-cookie']: _sc2, ...forgedRest } = forged.headers;
      expect(missingRest).toEqual(forgedRest);
    }
  });

  it('no response of this file carries a token, the raw session id or X-Powered-By', async () => {
    await settle();
    const tokens = tokenForms(s.idp.tokensIssued());
    const id = [sessionIdOf(validValue)];
    // the session id may only travel in the Set-Cookie that issues it
    const withoutIssuing = (head: string) => head.replace(/^set-cookie: gatehouse=[^;\r\n]+.*$/gim, '');
    const found = recorded.flatMap((r) =>
      [...leaks(scannable(r, s.idp.issuer), tokens), ...leaks(withoutIssuing(r.head) + '\n' + r.body, id)].map(
        (l) => `${r.url.slice(0, 60)}: ${l}`,
      ),
    );
    expect(found).toEqual([]);
    for (const r of recorded) expect(r.head).not.toMatch(/x-powered-by/i);
    for (const r of recorded) expect(r.status).toBeLessThan(500);
    // any response that sets or clears the session cookie is no-store (no cache may keep or replay it)
    const touching = recorded.filter((r) => /\r\nset-cookie: gatehouse=/i.test(r.head));
    expect(touching.length).toBeGreaterThan(20);
    for (const r of touching) expect(r.head).toMatch(/\r\ncache-control: no-store\r\n/i);
  });
});
