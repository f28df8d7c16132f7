/**
 * Refresh-token rotation over a session's life (RFC 9700 §4.14.2): expiry after expiry the gateway
 * refreshes once, sends the upstream the newest access token, presents only the newest refresh token, and
 * keeps the old refresh token when the IdP does not issue a new one (RFC 6749 §6).
 */
import type { Provider } from 'oidc-provider';
import type { TestIdp, TokenRequestRecord } from '../support/idp';
import { startStack, type Stack } from '../support/stack';
import { api, bearersSeen, login, outliveAccessToken, refreshCounters, refreshTokenReuse, sessionInfo } from '../support/refresh';

const AT_TTL = 2;
/** Refresh grants answered by the IdP while it did not rotate: their refresh token legitimately stays valid. */
const notRotated = new Set<TokenRequestRecord>();

/** The token responses issued since `from`, as [access token, refresh token?, ID token] (ID tokens are JWTs). */
function responsesSince(idp: TestIdp, from: number): Array<{ at: string; rt: string | undefined; id: string }> {
  const out: Array<{ at: string; rt: string | undefined; id: string }> = [];
  const fresh = idp.tokensIssued().slice(from);
  for (let i = 0; i < fresh.length;) {
    const at = fresh[i++]!;
    const rt = fresh[i] !== undefined && !fresh[i]!.includes('.') ? fresh[i++] : undefined;
    const id = fresh[i++];
    if (at.includes('.') || id === undefined || !id.includes('.')) throw new Error('unexpected token response layout');
    out.push({ at, rt, id });
  }
  return out;
}

/** The refresh tokens presented by refresh grants since request number `from`. */
function presentedSince(idp: TestIdp, from: number): Array<{ rt: string | undefined; status: number | undefined }> {
  return idp.tokenRequests
    .slice(from)
    .filter((r) => r.grantType === 'refresh_token')
    .map((r) => ({ rt: r.refreshToken, status: r.status }));
}

/**
 * Makes the real IdP stop rotating: the presented refresh token is not consumed and the response carries no
 * `refresh_token` (oidc-provider drops undefined members). Returns the undo.
 */
function stopRotating(idp: TestIdp): () => void {
  const proto = (idp.provider as Provider).RefreshToken.prototype as unknown as {
    consume(): Promise<void>;
    save(): Promise<string | undefined>;
  };
  const consume = Object.getOwnPropertyDescriptor(proto, 'consume');
  const save = Object.getOwnPropertyDescriptor(proto, 'save');
  proto.consume = async () => undefined;
  proto.save = async () => undefined;
  return () => {
    for (const [name, own] of [
      ['consume', consume],
      ['save', save],
    ] as const) {
      if (own) Object.defineProperty(proto, name, own);
      else delete (proto as Partial<typeof proto>)[name];
    }
  };
}

describe('a session living through many access tokens', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack({ instances: 2 });
  });
  afterAll(() => s.close());

  it('survives five expiries in a row with exactly five refresh grants, each presenting the newest refresh token, and sends the upstream the newest access token every time', async () => {
    const [a, b] = [s.instances[0]!, s.instances[1]!];
    const issuedFrom = s.idp.tokensIssued().length;
    const requestsFrom = s.idp.tokenRequests.length;
    const cookie = await login(s, 'five-expiries', a);
    const before = refreshCounters(s.idp);

    for (let cycle = 1; cycle <= 5; cycle++) {
      await outliveAccessToken(AT_TTL);
      // three calls per access token, across both replicas
      for (const inst of [a, b, a]) expect((await api(inst, cookie, `/cycle/${cycle}`)).status).toBe(200);
      const latest = responsesSince(s.idp, issuedFrom).at(-1)!;
      expect(bearersSeen(s, 3)).toEqual(Array(3).fill(`Bearer ${latest.at}`));
      expect(refreshCounters(s.idp).grants - before.grants).toBe(cycle);
    }

    const after = refreshCounters(s.idp);
    expect(after.grants - before.grants).toBe(5);
    expect(after.ok - before.ok).toBe(5);
    expect(after.reuse).toBe(0);
    expect((await sessionInfo(a, cookie)).status).toBe(200); // never logged out

    // login + 5 refreshes; refresh k presented the refresh token of response k-1, and got 200
    const responses = responsesSince(s.idp, issuedFrom);
    expect(responses).toHaveLength(6);
    expect(new Set(responses.map((r) => r.at)).size).toBe(6);
    expect(presentedSince(s.idp, requestsFrom)).toEqual(responses.slice(0, 5).map((r) => ({ rt: r.rt, status: 200 })));
  });

  it('keeps the old refresh token when the IdP issues no new one, and switches to the new one when rotation resumes', async () => {
    const issuedFrom = s.idp.tokensIssued().length;
    const requestsFrom = s.idp.tokenRequests.length;
    const cookie = await login(s, 'no-rotation');
    const rt1 = responsesSince(s.idp, issuedFrom)[0]!.rt;
    expect(rt1).toEqual(expect.any(String));

    const undo = stopRotating(s.idp);
    try {
      for (let i = 0; i < 2; i++) {
        await outliveAccessToken(AT_TTL);
        expect((await api(s.gw, cookie, '/no-rotation')).status).toBe(200);
      }
    } finally {
      undo();
      for (const r of s.idp.tokenRequests.slice(requestsFrom)) if (r.grantType === 'refresh_token') notRotated.add(r);
    }
    // the IdP really answered without a refresh token
    expect(responsesSince(s.idp, issuedFrom).map((r) => r.rt === undefined)).toEqual([false, true, true]);

    for (let i = 0; i < 2; i++) {
      await outliveAccessToken(AT_TTL);
      expect((await api(s.gw, cookie, '/rotating-again')).status).toBe(200);
    }
    const responses = responsesSince(s.idp, issuedFrom);
    const rt2 = responses[3]!.rt;
    expect(rt2).toEqual(expect.any(String));
    expect(rt2).not.toBe(rt1);
    expect(presentedSince(s.idp, requestsFrom)).toEqual([
      { rt: rt1, status: 200 }, // no new refresh token came back ...
      { rt: rt1, status: 200 }, // ... so the old one was kept, and is still good
      { rt: rt1, status: 200 }, // this one rotates: rt2 comes back
      { rt: rt2, status: 200 },
    ]);
    expect(bearersSeen(s, 1)).toEqual([`Bearer ${responses.at(-1)!.at}`]);
    expect(s.idp.reuseDetected).toBe(0);
  });

  it('never presents a rotated refresh token again, in this whole file', () => {
    expect(s.idp.tokenRequests.filter((r) => r.grantType === 'refresh_token')).toHaveLength(9);
    expect(notRotated.size).toBe(2);
    expect(refreshTokenReuse(s.idp, notRotated)).toEqual([]);
    expect(s.idp.reuseDetected).toBe(0);
  });
});
