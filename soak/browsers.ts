/**
 * The simulated browsers: each a cookie jar at the gateway and one at the IdP, behaving as the SPA contract
 * says (README "The SPA contract"): call `/api` with `X-CSRF: 1`; on 401 log in again (the real flow: the
 * gateway's /auth/login, the IdP, the callback); on 502/503/504 back off (0.5 s doubling to 8 s, never sooner
 * than Retry-After) and retry with the same cookie. Some log out (and go through the IdP's logout), a few are
 * revoked at the IdP on purpose.
 *
 * In front of the replicas sits a load balancer the fleet plays itself: each call goes to the next replica
 * in the pool (no stickiness); a killed replica leaves the pool at once, and a restarted one joins once it
 * is ready. A refused connection is retried on another replica (the balancer's job); a call cut by a kill
 * is the balancer's 502 to the browser.
 *
 * A 401 is expected only for a reason the soak itself caused: a revocation, the session's absolute lifetime,
 * the Redis data loss, or a refresh token whose rotation a killed replica took with it (the IdP proxy
 * reports those, sometimes after the browser saw the 401). So 401s are judged after the run, against the
 * whole timeline (judge()); any other 401 is a session lost.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Replica } from './replicas';
import { errorCode, Jar, request, RequestFailed, type Answer } from './http';
import { parseForm } from '../src/testing/idpBrowser';

export interface CallRecord {
  sent: number;
  done: number;
  outcome: string;
  replica: number;
  browser: number;
  /** a 401: the answer's code and when the session began, judged after the run (Fleet.judge) */
  unauthorized?: { code: string; sessionFrom: number };
}
export interface LoginRecord {
  sent: number;
  done: number;
  outcome: string;
}

/** The gateway's documented answers while something behind it fails (README, "What /api/* answers"). */
const DOCUMENTED: Record<number, string[]> = {
  502: ['bad_gateway'],
  503: ['token_refresh_unavailable', 'session_store_unavailable', 'upstream_busy'],
  504: ['upstream_timeout'],
};
/** Answers the docs give a Retry-After. */
const RETRY_AFTER = new Set(['token_refresh_unavailable', 'session_store_unavailable', 'upstream_busy']);

export const EXPECTED_401 = ['401 revoked', '401 lifetime', '401 data loss', '401 kill'] as const;

interface Browser {
  id: number;
  sub: string;
  jar: Jar;
  idpJar: Jar | undefined;
  /** when the callback that made the current session was sent (the session began after it) */
  sessionFrom: number;
  loggedIn: boolean;
  loggingIn: boolean;
  logoutWanted: boolean;
  revokedAt: number | undefined;
  /** the first answer after a data loss is still to be judged */
  dataLossPending: boolean;
  failures: number;
  loginFailures: number;
}

export interface FleetOptions {
  browsers: number;
  /** each browser calls once per period */
  periodMs: number;
  /** logins are spread over this long at the start */
  rampMs: number;
  publicUrl: string;
  issuer: string;
  absoluteMs: number;
  replicas: Replica[];
}

export class Fleet {
  readonly calls: CallRecord[] = [];
  readonly logins: LoginRecord[] = [];
  readonly logouts: LoginRecord[] = [];
  /** one line per session lost or answer that should not have been */
  readonly findings: string[] = [];
  readonly dataLoss = { affected: 0, unauthenticated: 0, other: {} as Record<string, number> };
  readonly lb = { refusedRetried: 0, staleConnectionRetried: 0 };
  private readonly browsers: Browser[] = [];
  private readonly wipes: number[] = [];
  private stopping = false;
  private running: Promise<void>[] = [];
  private next = 0;

  constructor(private readonly o: FleetOptions) {
    for (let i = 0; i < o.browsers; i++) {
      this.browsers.push({
        id: i,
        sub: `soak-${String(i).padStart(4, '0')}`,
        jar: new Jar(),
        idpJar: undefined,
        sessionFrom: 0,
        loggedIn: false,
        loggingIn: false,
        logoutWanted: false,
        revokedAt: undefined,
        dataLossPending: false,
        failures: 0,
        loginFailures: 0,
      });
    }
  }

  start(): void {
    this.running = this.browsers.map((b) => this.run(b));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.running);
  }

  get loggedIn(): number {
    return this.browsers.filter((b) => b.loggedIn).length;
  }

  /** The next replica in the pool, or undefined when none is up. */
  private pick(not?: Replica): Replica | undefined {
    const pool = this.o.replicas.filter((r) => r.up && r !== not);
    if (pool.length === 0) return undefined;
    return pool[this.next++ % pool.length];
  }

  private async run(b: Browser): Promise<void> {
    await sleep(Math.random() * this.o.rampMs);
    while (!this.stopping) {
      if (!b.loggedIn) {
        if (await this.login(b)) {
          b.loginFailures = 0;
          await sleep(Math.random() * 500);
        } else {
          await sleep(backoff(b.loginFailures++) + Math.random() * 500);
        }
        continue;
      }
      if (b.logoutWanted) {
        await this.logout(b);
        await sleep(1000 + Math.random() * 2000);
        continue;
      }
      const started = Date.now();
      const retryAfterMs = await this.call(b);
      if (retryAfterMs !== undefined) {
        await sleep(Math.max(retryAfterMs, backoff(b.failures++)));
        continue;
      }
      b.failures = 0;
      await sleep(Math.max(0, started + this.o.periodMs * (0.9 + Math.random() * 0.2) - Date.now()));
    }
  }

  /** One call to /api; resolves to the wait before the next one when the answer asks to back off. */
  private async call(b: Browser): Promise<number | undefined> {
    const sent = Date.now();
    let r = this.pick();
    const record = (outcome: string, replica = r, unauthorized?: CallRecord['unauthorized']) => {
      this.calls.push({
        sent,
        done: Date.now(),
        outcome,
        replica: replica?.index ?? -1,
        browser: b.id,
        ...(unauthorized && { unauthorized }),
      });
    };
    if (!r) {
      record('no replica');
      return 1000;
    }
    let a: Answer | undefined;
    for (let attempt = 0; !a; attempt++) {
      try {
        a = await request(`${r.url}/api/items/${b.id}`, { headers: { cookie: b.jar.header(), 'x-csrf': '1' } });
      } catch (err) {
        const f = err instanceof RequestFailed ? err : new RequestFailed(String(err));
        const killed = !r.up || Date.now() - r.killedAt < 3000;
        if (attempt < 2 && f.code === 'ECONNREFUSED') {
          // Nothing listens there (yet): the balancer tries another replica.
          this.lb.refusedRetried++;
          r = this.pick(r) ?? r;
          continue;
        }
        if (attempt < 2 && f.code === 'ECONNRESET' && f.reused && !killed) {
          // A kept-alive connection the server had just closed: browsers send such a request again by themselves.
          this.lb.staleConnectionRetried++;
          continue;
        }
        if (killed) {
          record('lb 502');
          return 500;
        }
        record(f.code === 'TIMEOUT' ? 'timeout' : `conn ${f.code}`);
        this.findings.push(`${iso(sent)} ${b.sub}: ${f.code} from ${r.name}`);
        return 1000;
      }
    }
    b.jar.take(a);
    const code = errorCode(a);
    if (a.status === 200) {
      record('ok');
      return undefined;
    }
    if (a.status === 401) {
      record(`401 ${code || '(no code)'}`, r, { code, sessionFrom: b.sessionFrom });
      if (b.dataLossPending) {
        b.dataLossPending = false;
        if (code === 'unauthenticated') this.dataLoss.unauthenticated++;
        else this.dataLoss.other[`401 ${code}`] = (this.dataLoss.other[`401 ${code}`] ?? 0) + 1;
      }
      b.loggedIn = false;
      return undefined;
    }
    if (b.dataLossPending && a.status !== 503) {
      // After a data loss the first answer (but a 503 while Redis restarts) must be 401 unauthenticated.
      b.dataLossPending = false;
      const k = `${a.status} ${code}`;
      this.dataLoss.other[k] = (this.dataLoss.other[k] ?? 0) + 1;
    }
    const documented = DOCUMENTED[a.status]?.includes(code) ?? false;
    if (documented) {
      const ra = Number(a.headers['retry-after']);
      const missing = RETRY_AFTER.has(code) && !Number.isFinite(ra);
      record(`${a.status} ${code}${missing ? ' (no Retry-After)' : ''}`);
      return Number.isFinite(ra) ? ra * 1000 : 500;
    }
    record(`${a.status} ${a.status >= 500 ? 'undocumented ' : ''}${code || '(no code)'}`);
    this.findings.push(`${iso(sent)} ${b.sub}: ${a.status} ${code} ${a.body.slice(0, 120)} from ${r.name}`);
    return a.status >= 500 ? 1000 : undefined;
  }

  /**
   * Judges every 401 once the run is over: expected when the soak caused it (a revocation of the account, an
   * exposure of its refresh token at a kill, a data loss, the absolute lifetime), all after the session began
   * and before the answer. Each revocation or exposure explains one 401.
   */
  judge(revocations: Array<{ sub: string; at: number }>, exposures: Array<{ sub: string; at: number; cause: string }>): void {
    const unused = (list: Array<{ sub: string; at: number }>) => list.map((x) => ({ ...x, used: false }));
    const revoked = unused(revocations);
    const exposed = unused(exposures.filter((e) => e.cause === 'kill'));
    const take = (list: typeof revoked, sub: string, from: number, until: number) => {
      const x = list.find((e) => !e.used && e.sub === sub && e.at >= from && e.at <= until);
      if (x) x.used = true;
      return x !== undefined;
    };
    for (const c of this.calls) {
      const u = c.unauthorized;
      if (!u) continue;
      const sub = this.browsers[c.browser]!.sub;
      // The cause may come while the call waits (a refresh held up by a slow IdP): before the answer will do.
      if (u.code === 'session_expired' && take(revoked, sub, u.sessionFrom, c.done)) c.outcome = '401 revoked';
      else if (u.code === 'session_expired' && take(exposed, sub, u.sessionFrom, c.done)) c.outcome = '401 kill';
      else if (u.code === 'unauthenticated' && this.wipes.some((w) => w >= u.sessionFrom && w <= c.done)) c.outcome = '401 data loss';
      else if (u.code === 'unauthenticated' && c.sent >= u.sessionFrom + this.o.absoluteMs - 500) c.outcome = '401 lifetime';
      else {
        c.outcome = `401 unexpected ${u.code || '(no code)'}`;
        this.findings.push(`${iso(c.sent)} ${sub}: 401 ${u.code} from replica ${c.replica}, session from ${iso(u.sessionFrom)}`);
      }
    }
  }

  /** The real login: /auth/login → the IdP (as b.sub) → /auth/callback; true when the browser has a session. */
  private async login(b: Browser): Promise<boolean> {
    const sent = Date.now();
    const done = (outcome: string) => {
      this.logins.push({ sent, done: Date.now(), outcome });
      return outcome === 'ok';
    };
    b.loggingIn = true;
    try {
      const idpJar = new Jar();
      const r = this.pick();
      if (!r) return done('no replica');
      const start = await request(`${r.url}/auth/login`, { headers: { cookie: b.jar.header() } });
      b.jar.take(start);
      let location = String(start.headers.location ?? '');
      if (start.status !== 302 || !location.startsWith(`${this.o.issuer}/`)) return done(`login ${start.status} ${errorCode(start)}`);
      const callback = `${this.o.publicUrl}/auth/callback`;
      for (let hops = 0; !location.startsWith(callback); hops++) {
        if (hops > 10 || !location.startsWith(`${this.o.issuer}/`)) return done(`idp redirect to ${location.slice(0, 40)}`);
        const step = await request(location, { headers: { cookie: idpJar.header(), 'x-test-account': b.sub } });
        idpJar.take(step);
        const next = step.headers.location;
        if (!next) return done(`idp ${step.status} ${errorCode(step)}`);
        location = new URL(next, location).href;
      }
      const r2 = this.pick() ?? r;
      const from = Date.now();
      const cb = await request(`${r2.url}${location.slice(this.o.publicUrl.length)}`, { headers: { cookie: b.jar.header() } });
      b.jar.take(cb);
      if (cb.status !== 302 || !b.jar.get('gatehouse')) return done(`callback ${cb.status} ${errorCode(cb)}`);
      b.idpJar = idpJar;
      b.sessionFrom = from;
      b.loggedIn = true;
      b.revokedAt = undefined;
      b.dataLossPending = this.wipes.some((w) => w >= from);
      return done('ok');
    } catch (err) {
      return done(`error ${err instanceof RequestFailed ? err.code : String(err)}`);
    } finally {
      b.loggingIn = false;
    }
  }

  /** POST /auth/logout, then the IdP's logout page and back to the gateway with its `state`. */
  private async logout(b: Browser): Promise<void> {
    const sent = Date.now();
    const done = (outcome: string) => void this.logouts.push({ sent, done: Date.now(), outcome });
    const r = this.pick();
    if (!r) return done('no replica');
    try {
      const a = await request(`${r.url}/auth/logout`, { method: 'POST', headers: { cookie: b.jar.header(), 'x-csrf': '1' } });
      b.jar.take(a);
      if (a.status !== 200) return done(`logout ${a.status} ${errorCode(a)}`);
      b.loggedIn = false;
      b.logoutWanted = false;
      const logoutUrl = (JSON.parse(a.body) as { logoutUrl?: string | null }).logoutUrl;
      if (!logoutUrl || !b.idpJar) return done('ok, no IdP logout');
      // RP-initiated logout at the IdP: its confirmation form, then back to the post-logout URI.
      const page = await request(logoutUrl, { headers: { cookie: b.idpJar.header() } });
      b.idpJar.take(page);
      const form = parseForm(page.body);
      if (page.status !== 200 || !form) return done(`idp logout page ${page.status}`);
      const confirm = await request(new URL(form.action, logoutUrl).href, {
        method: 'POST',
        headers: { cookie: b.idpJar.header(), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...form.fields, logout: 'yes' }).toString(),
      });
      const back = String(confirm.headers.location ?? '');
      if (!back.startsWith(this.o.publicUrl)) return done(`idp logout confirm ${confirm.status}`);
      const r2 = this.pick() ?? r;
      const landed = await request(`${r2.url}${back.slice(this.o.publicUrl.length)}`, { headers: { cookie: b.jar.header() } });
      return done(landed.status === 302 && landed.headers.location === '/' ? 'ok' : `return ${landed.status}`);
    } catch (err) {
      return done(`error ${err instanceof RequestFailed ? err.code : String(err)}`);
    }
  }

  /** Picks a logged-in browser to log out soon. */
  logoutOne(): void {
    const b = this.randomLoggedIn();
    if (b) b.logoutWanted = true;
  }

  /** Picks a logged-in browser to revoke at the IdP; the caller revokes it. */
  revokeOne(): string | undefined {
    const b = this.randomLoggedIn();
    if (!b) return undefined;
    b.revokedAt = Date.now();
    return b.sub;
  }

  /** Redis lost its data at `at`: every session that existed then is gone. */
  wiped(at: number): void {
    this.wipes.push(at);
    for (const b of this.browsers) {
      if (b.loggedIn || b.loggingIn) {
        this.dataLoss.affected++;
        b.dataLossPending = true;
      }
    }
  }

  private randomLoggedIn(): Browser | undefined {
    const live = this.browsers.filter((b) => b.loggedIn && !b.logoutWanted && b.revokedAt === undefined);
    return live[Math.floor(Math.random() * live.length)];
  }
}

/** 0.5 s, 1 s, 2 s, … 8 s: the browser client's backoff. */
function backoff(n: number): number {
  return Math.min(500 * 2 ** n, 8000);
}

const iso = (t: number) => new Date(t).toISOString().slice(11, 23);
