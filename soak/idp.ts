/**
 * The soak's IdP (a child process): the test IdP, unchanged (oidc-provider: rotating refresh tokens, reuse
 * detection that revokes the grant), whose issuer is `http://127.0.0.1:<port>`. Once it has started, its own
 * server is closed and the provider is served on a private port: the issuer's port is the fault proxy's
 * (idpProxy.ts), through which every gateway and browser reaches it.
 *
 * oidc-provider's development adapter keeps at most 1,000 entries in an LRU: at the soak's volume it would
 * forget live refresh tokens and IdP sessions (a spurious invalid_grant). Its models get an unbounded store
 * with the same TTLs instead.
 */
import http from 'node:http';
import { startTestIdp, type TestIdp } from '../src/testing/testIdp';
import { freePort } from '../bench/procs';
import { rpcServer } from './protocol';

export interface IdpChildOptions {
  /** the issuer's port (the proxy listens on it) */
  port: number;
  publicUrl: string;
  /** the API's resource indicator (RFC 8707): its access tokens are JWTs the upstream verifies */
  resource: string;
  accessTokenTtl: number;
}

const o = JSON.parse(process.argv[2] ?? '{}') as IdpChildOptions;

// ---------- an unbounded store for oidc-provider's memory adapter ----------

interface Entry {
  value: unknown;
  expiry?: number;
}
class TtlStore {
  private readonly map = new Map<string, Entry>();
  get(key: string): unknown {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.expiry !== undefined && e.expiry <= Date.now()) {
      this.map.delete(key);
      return undefined;
    }
    return e.value;
  }
  set(key: string, value: unknown, { maxAge }: { maxAge?: number } = {}): this {
    const expiry = typeof maxAge === 'number' && Number.isFinite(maxAge) ? Date.now() + maxAge : undefined;
    this.map.set(key, { value, ...(expiry !== undefined && { expiry }) });
    return this;
  }
  has(key: string): boolean {
    return this.get(key) !== undefined;
  }
  delete(key: string): boolean {
    return this.map.delete(key);
  }
  sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.map) if (e.expiry !== undefined && e.expiry <= now) this.map.delete(k);
  }
}

const MODELS = [
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'ClientCredentials',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'Grant',
  'Session',
  'Interaction',
  'InitialAccessToken',
  'RegistrationAccessToken',
  'ReplayDetection',
  'PushedAuthorizationRequest',
  'Client',
];

function unboundedStorage(idp: TestIdp): TtlStore {
  const store = new TtlStore();
  const provider = idp.provider as Record<string, { adapter?: { store?: unknown } } | undefined>;
  for (const name of MODELS) {
    const adapter = provider[name]?.adapter;
    if (adapter && 'store' in adapter) adapter.store = store;
  }
  setInterval(() => store.sweep(), 30_000).unref();
  return store;
}

async function main(): Promise<void> {
  const idp = await startTestIdp({
    port: o.port,
    accessTokenTtl: o.accessTokenTtl,
    refreshTokenTtl: 3600,
    resources: [o.resource],
    redirectUri: `${o.publicUrl}/auth/callback`,
    postLogoutRedirectUri: `${o.publicUrl}/`,
  });
  unboundedStorage(idp);
  const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as { keys: unknown[] };
  // The IdP's own server gives its port to the proxy; the provider is served on a private port.
  await idp.close();
  const internalPort = await freePort();
  const callback = (idp.provider as { callback(): http.RequestListener }).callback();
  const internal = http.createServer(callback);
  internal.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => internal.listen(internalPort, '127.0.0.1', resolve));
  rpcServer({
    revoke: (sub: string) => idp.revoke(sub),
  });
  process.send?.({ ready: { issuer: idp.issuer, jwks, internalPort } });
}

process.on('disconnect', () => process.exit(0));
main().catch((err: unknown) => {
  process.stderr.write(`soak idp: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
