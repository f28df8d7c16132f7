/**
 * A real login, the way a browser does it: GET /auth/login → the IdP's authorization endpoint → (the test
 * IdP finishes its interaction by itself, for the account named in X-Test-Account) → /auth/callback with
 * the code → the session cookie. Two cookie jars (gateway, IdP), no redirect followed automatically.
 */

type Jar = Map<string, string>;

function remember(jar: Jar, res: Response): void {
  for (const line of res.headers.getSetCookie()) {
    const [pair = '', ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '';
    if (expired) jar.delete(name);
    else jar.set(name, value);
  }
}

const header = (jar: Jar) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

async function get(url: string, jar: Jar, extra: Record<string, string> = {}): Promise<Response> {
  const res = await fetch(url, { redirect: 'manual', headers: { cookie: header(jar), ...extra } });
  remember(jar, res);
  await res.arrayBuffer();
  return res;
}

/** Logs `sub` in through the gateway at `gatewayUrl`; returns the Cookie header value of its session. */
export async function login(gatewayUrl: string, issuer: string, sub: string, cookieName = 'gatehouse'): Promise<string> {
  const gw: Jar = new Map();
  const idp: Jar = new Map();
  const start = await get(`${gatewayUrl}/auth/login`, gw);
  let location = start.headers.get('location') ?? '';
  if (start.status !== 302 || !location.startsWith(`${issuer}/`))
    throw new Error(`login: /auth/login answered ${start.status} ${location}`);
  const callback = `${gatewayUrl}/auth/callback`;
  for (let hops = 0; !location.startsWith(callback); hops++) {
    if (hops > 10 || !location.startsWith(`${issuer}/`)) throw new Error(`login: unexpected redirect to ${location}`);
    const res = await get(location, idp, { 'x-test-account': sub });
    const next = res.headers.get('location');
    if (!next) throw new Error(`login: the IdP answered ${res.status} at ${location}`);
    location = new URL(next, location).href;
  }
  const done = await get(location, gw);
  const session = gw.get(cookieName);
  if (done.status !== 302 || !session) throw new Error(`login: /auth/callback answered ${done.status} without a session cookie`);
  return `${cookieName}=${session}`;
}
