/**
 * gatehouse-bff/client against an injected fetch and navigation: the fetch is the client's boundary, so a
 * scripted one is the peer here (the real-browser suite in test/browser runs it against a real gateway).
 */
import { createGatehouseClient, parseRetryAfter, type GatehouseClientOptions } from '../../client/index';

type Answer = Response | (() => Response);

interface Harness {
  calls: Array<{ url: string; init: RequestInit; body?: string }>;
  sleeps: number[];
  navigations: string[];
  client: ReturnType<typeof createGatehouseClient>;
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

function harness(answers: Answer[], options: GatehouseClientOptions = {}): Harness {
  const h: Harness = { calls: [], sleeps: [], navigations: [], client: undefined as never };
  const queue = [...answers];
  h.client = createGatehouseClient({
    fetch: async (input, init = {}) => {
      if (input instanceof Request) h.calls.push({ url: input.url, init, body: await input.text() });
      else h.calls.push({ url: input instanceof URL ? input.href : input, init });
      const next = queue.shift();
      if (!next) throw new Error('fake fetch: no answer left');
      return typeof next === 'function' ? next() : next;
    },
    navigate: (url) => h.navigations.push(url),
    currentPath: () => '/orders/7?tab=items#line-3',
    sleep: async (ms) => {
      h.sleeps.push(ms);
    },
    now: () => Date.parse('2026-11-22T10:00:00Z'),
    ...options,
  });
  return h;
}

const header = (init: RequestInit, name: string) => new Headers(init.headers).get(name);

describe('gatehouse-bff/client fetch', () => {
  it('sends X-CSRF: 1 and credentials same-origin, keeping the caller’s headers and options', async () => {
    const h = harness([json(200, { ok: true })]);
    const res = await h.client.fetch('/api/things', { method: 'PUT', headers: { 'Content-Type': 'text/plain', 'X-CSRF': '0' }, body: 'x' });
    expect(res.status).toBe(200);
    const { url, init } = h.calls[0]!;
    expect(url).toBe('/api/things');
    expect(init.credentials).toBe('same-origin');
    expect(init.method).toBe('PUT');
    expect(init.body).toBe('x');
    expect(header(init, 'X-CSRF')).toBe('1');
    expect(header(init, 'Content-Type')).toBe('text/plain');
  });

  it('keeps the headers of a Request given as input', async () => {
    const h = harness([json(200, {})]);
    await h.client.fetch(new Request('http://app.test/api/a', { headers: { Accept: 'application/json' } }));
    expect(header(h.calls[0]!.init, 'Accept')).toBe('application/json');
    expect(header(h.calls[0]!.init, 'X-CSRF')).toBe('1');
  });

  it.each(['unauthenticated', 'session_expired'])(
    'on 401 %s navigates to the login with the current path, search and hash as returnTo, and returns the response',
    async (code) => {
      const h = harness([json(401, { error: code, message: 'x' })]);
      const res = await h.client.fetch('/api/a');
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: code, message: 'x' }); // the body is still readable
      expect(h.navigations).toEqual([`/auth/login?returnTo=${encodeURIComponent('/orders/7?tab=items#line-3')}`]);
    },
  );

  it('calls a configured unauthenticated handler instead of navigating', async () => {
    const seen: string[] = [];
    const h = harness([json(401, { error: 'session_expired' })], {
      onUnauthenticated: (reason, res) => seen.push(`${reason} ${res.status}`),
    });
    await h.client.fetch('/api/a');
    expect(seen).toEqual(['session_expired 401']);
    expect(h.navigations).toEqual([]);
  });

  it('returns other 401s (the API’s own) and 4xx answers as they are, without navigating or retrying', async () => {
    const h = harness([json(401, { error: 'invalid_token' }), new Response('nope', { status: 401 }), json(403, { error: 'csrf' })]);
    expect((await h.client.fetch('/api/a')).status).toBe(401);
    expect((await h.client.fetch('/api/b')).status).toBe(401);
    expect((await h.client.fetch('/api/c')).status).toBe(403);
    expect(h.navigations).toEqual([]);
    expect(h.calls).toHaveLength(3);
  });

  it('puts basePath in front of the login URL', async () => {
    const h = harness([json(401, { error: 'unauthenticated' })], { basePath: '/bff/' });
    await h.client.fetch('/bff/api/a');
    expect(h.navigations).toEqual([`/bff/auth/login?returnTo=${encodeURIComponent('/orders/7?tab=items#line-3')}`]);
  });
});

describe('gatehouse-bff/client retries', () => {
  it('retries 502/503 with exponential backoff until an answer that is not', async () => {
    const h = harness([json(502, { error: 'bad_gateway' }), json(503, {}), json(503, {}), json(200, { ok: 1 })]);
    const res = await h.client.fetch('/api/a');
    expect(res.status).toBe(200);
    expect(h.calls).toHaveLength(4);
    expect(h.sleeps).toEqual([500, 1000, 2000]);
  });

  it('waits Retry-After seconds when the server asks for longer than the backoff step', async () => {
    const h = harness([json(503, { error: 'token_refresh_unavailable' }, { 'Retry-After': '3' }), json(200, {})]);
    expect((await h.client.fetch('/api/a')).status).toBe(200);
    expect(h.sleeps).toEqual([3000]);
  });

  it('waits until a Retry-After HTTP date', async () => {
    const h = harness([json(503, {}, { 'Retry-After': 'Sun, 22 Nov 2026 10:00:02 GMT' }), json(200, {})]);
    expect((await h.client.fetch('/api/a')).status).toBe(200);
    expect(h.sleeps).toEqual([2000]);
  });

  it('stops after maxAttempts and returns the last answer', async () => {
    const h = harness([json(503, {}), json(503, {}), json(503, { last: true })], { retry: { maxAttempts: 3, baseDelayMs: 100 } });
    const res = await h.client.fetch('/api/a');
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ last: true });
    expect(h.calls).toHaveLength(3);
    expect(h.sleeps).toEqual([100, 200]);
  });

  it('caps backoff steps at maxDelayMs', async () => {
    const h = harness([json(503, {}), json(503, {}), json(503, {}), json(200, {})], { retry: { baseDelayMs: 1000, maxDelayMs: 1500 } });
    await h.client.fetch('/api/a');
    expect(h.sleeps).toEqual([1000, 1500, 1500]);
  });

  it('returns the answer instead of retrying early when Retry-After asks for longer than maxDelayMs', async () => {
    const h = harness([json(503, {}, { 'Retry-After': '120' })], { retry: { maxDelayMs: 10_000 } });
    expect((await h.client.fetch('/api/a')).status).toBe(503);
    expect(h.calls).toHaveLength(1);
    expect(h.sleeps).toEqual([]);
  });

  it('does not retry a POST that may have reached the API, but does when Gatehouse says it was not forwarded', async () => {
    const h = harness([
      json(503, { error: 'service_busy' }),
      json(502, { error: 'bad_gateway' }),
      json(503, { error: 'token_refresh_unavailable' }, { 'Retry-After': '1' }),
      json(201, {}),
    ]);
    expect((await h.client.fetch('/api/orders', { method: 'POST', body: '{"n":1}' })).status).toBe(503);
    expect((await h.client.fetch('/api/orders', { method: 'POST', body: '{"n":1}' })).status).toBe(502);
    expect((await h.client.fetch('/api/orders', { method: 'POST', body: '{"n":1}' })).status).toBe(201);
    expect(h.calls.map((c) => c.init.body)).toEqual(['{"n":1}', '{"n":1}', '{"n":1}', '{"n":1}']);
    expect(h.sleeps).toEqual([1000]);
  });

  it('never retries a request whose body is a stream, whatever the method', async () => {
    const h = harness([json(503, { error: 'token_refresh_unavailable' })]);
    const body = new ReadableStream({ start: (c) => c.close() });
    const res = await h.client.fetch('/api/upload', { method: 'PUT', body, duplex: 'half' });
    expect(res.status).toBe(503);
    expect(h.calls).toHaveLength(1);
  });

  it('sends a fresh copy of a Request input at each attempt, body included', async () => {
    const h = harness([json(503, {}), json(200, {})]);
    await h.client.fetch(new Request('http://app.test/api/a', { method: 'PUT', body: 'payload' }));
    expect(h.calls.map((c) => c.body)).toEqual(['payload', 'payload']);
  });

  it('stops waiting when the request is aborted', async () => {
    const controller = new AbortController();
    const h = harness([json(503, {}), json(200, {})], {
      sleep: (_ms, signal) => new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason as Error))),
    });
    const pending = h.client.fetch('/api/a', { signal: controller.signal });
    await new Promise((r) => setImmediate(r));
    controller.abort();
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(h.calls).toHaveLength(1);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2026-11-22T10:00:00Z');
  it.each([
    ['0', 0],
    [' 5 ', 5000],
    ['Sun, 22 Nov 2026 10:00:30 GMT', 30_000],
    ['Sun, 22 Nov 2026 09:00:00 GMT', 0],
  ])('reads %j as %d ms', (value, ms) => expect(parseRetryAfter(value, now)).toBe(ms));
  it.each([null, '', 'soon', '-1', '1.5'])('ignores %j', (value) => expect(parseRetryAfter(value, now)).toBeUndefined());
});

describe('gatehouse-bff/client silent login', () => {
  it('navigates to a prompt=none login that comes back to the current page', () => {
    const h = harness([], { basePath: '/bff' });
    expect(h.client.trySilentLogin()).toBe(true);
    expect(h.navigations).toEqual([`/bff/auth/login?prompt=none&returnTo=${encodeURIComponent('/orders/7?tab=items#line-3')}`]);
    expect(h.client.trySilentLogin('/home')).toBe(true);
    expect(h.navigations[1]).toBe('/bff/auth/login?prompt=none&returnTo=%2Fhome');
  });

  it('does not navigate on the page a failed silent login came back to (login=none): no loop', () => {
    const h = harness([], { currentPath: () => '/orders/7?tab=items&login=none#line-3' });
    expect(h.client.trySilentLogin()).toBe(false);
    expect(h.navigations).toEqual([]);
  });

  it('tries again on a page whose query merely mentions login', () => {
    const h = harness([], { currentPath: () => '/search?q=login%3Dnone&login=nonesuch' });
    expect(h.client.trySilentLogin()).toBe(true);
  });
});

describe('gatehouse-bff/client session and logout', () => {
  it('getSession returns the /auth/session body, with X-CSRF, and null on 401 without navigating', async () => {
    const session = {
      authenticated: true,
      user: { sub: 'alice' },
      expiresAt: 2,
      idleExpiresAt: 1,
      accessTokenExpiresAt: 1,
      refreshCount: 0,
    };
    const h = harness([json(200, session), json(401, { error: 'unauthenticated' })], { basePath: '/bff' });
    expect(await h.client.getSession()).toEqual(session);
    expect(await h.client.getSession()).toBeNull();
    expect(h.calls.map((c) => c.url)).toEqual(['/bff/auth/session', '/bff/auth/session']);
    expect(header(h.calls[0]!.init, 'X-CSRF')).toBe('1');
    expect(h.navigations).toEqual([]);
  });

  it('getSession throws a GatehouseError carrying the status and code on other errors', async () => {
    const h = harness([json(403, { error: 'csrf' })]);
    await expect(h.client.getSession()).rejects.toMatchObject({ name: 'GatehouseError', status: 403, code: 'csrf' });
  });

  it('logout POSTs /auth/logout with X-CSRF, then goes to the IdP’s logoutUrl', async () => {
    const h = harness([json(200, { logoutUrl: 'https://idp.test/session/end?state=s' })]);
    await h.client.logout();
    expect(h.calls[0]!.url).toBe('/auth/logout');
    expect(h.calls[0]!.init.method).toBe('POST');
    expect(header(h.calls[0]!.init, 'X-CSRF')).toBe('1');
    expect(h.navigations).toEqual(['https://idp.test/session/end?state=s']);
  });

  it('logout goes to the logged-out path when the IdP has no end-session URL (default /)', async () => {
    const a = harness([json(200, { logoutUrl: null })]);
    await a.client.logout();
    expect(a.navigations).toEqual(['/']);
    const b = harness([json(200, { logoutUrl: null })], { loggedOutPath: '/bye' });
    await b.client.logout();
    expect(b.navigations).toEqual(['/bye']);
  });

  it('logout is retried on 503 (it is idempotent) and throws without navigating when it keeps failing', async () => {
    const h = harness([json(503, { error: 'session_store_unavailable' }), json(200, { logoutUrl: null })]);
    await h.client.logout();
    expect(h.calls).toHaveLength(2);
    expect(h.navigations).toEqual(['/']);
    const failing = harness([json(503, {}), json(503, {})], { retry: { maxAttempts: 2 } });
    await expect(failing.client.logout()).rejects.toMatchObject({ status: 503 });
    expect(failing.navigations).toEqual([]);
  });
});
