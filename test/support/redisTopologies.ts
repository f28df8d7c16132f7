/**
 * Real Redis Cluster and Sentinel deployments for the tests that need them, built from private redis-server
 * processes on free ports (never the suite's shared Redis). Nothing is mocked: the gateway talks to them
 * through ioredis exactly as in production.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { findFreePort, startRedisServer, type RedisServerHandle } from './redisServer';
import { waitFor } from './wait';

export interface RedisCluster {
  /** `{"mode":"cluster","nodes":[...]}`, as a config file would say it. */
  settings: { mode: 'cluster'; nodes: string[] };
  masters: RedisServerHandle[];
  /** A client to every master, for inspection (KEYS, CLUSTER KEYSLOT). */
  direct: Redis[];
  stop(): Promise<void>;
}

const CLUSTER_SLOTS = 16384;

/**
 * `masters` redis-servers with cluster-enabled, the slots split evenly, joined with CLUSTER MEET, and
 * waited for until every node reports cluster_state:ok.
 */
export async function startRedisCluster(masters = 3): Promise<RedisCluster> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-cluster-'));
  const servers: RedisServerHandle[] = [];
  const direct: Redis[] = [];
  const busPorts: number[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      // The cluster bus gets a free port of its own (default port+10000 may be taken or out of range).
      const busPort = await findFreePort();
      busPorts.push(busPort);
      servers.push(
        await startRedisServer(undefined, {
          extraArgs: [
            ...['--cluster-enabled', 'yes', '--cluster-port', String(busPort)],
            ...['--cluster-config-file', path.join(dir, `nodes-${i}-${busPort}.conf`), '--cluster-node-timeout', '2000'],
          ],
        }),
      );
    }
    for (const s of servers) direct.push(new Redis(s.url, { lazyConnect: false, maxRetriesPerRequest: 1 }));
    const per = Math.ceil(CLUSTER_SLOTS / masters);
    await Promise.all(direct.map((r, i) => r.call('CLUSTER', 'ADDSLOTSRANGE', i * per, Math.min(CLUSTER_SLOTS, (i + 1) * per) - 1)));
    for (let i = 1; i < masters; i++) await direct[0]!.call('CLUSTER', 'MEET', '127.0.0.1', servers[i]!.port, busPorts[i]!);
    await untilRedis('the cluster to form', async () => {
      const infos = await Promise.all(direct.map((r) => r.call('CLUSTER', 'INFO') as Promise<string>));
      return infos.every((info) => info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${masters}`));
    });
  } catch (err) {
    direct.forEach((r) => r.disconnect());
    await Promise.all(servers.map((s) => s.kill()));
    throw err;
  }
  return {
    settings: { mode: 'cluster', nodes: servers.map((s) => `127.0.0.1:${s.port}`) },
    masters: servers,
    direct,
    async stop() {
      direct.forEach((r) => r.disconnect());
      await Promise.all(servers.map((s) => s.kill()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisSentinel {
  settings: { mode: 'sentinel'; sentinels: string[]; name: string };
  name: string;
  servers: RedisServerHandle[];
  sentinel: RedisServerHandle;
  /** A client to the Sentinel itself. */
  admin: Redis;
  /** The port of the master Sentinel currently names. */
  masterPort(): Promise<number>;
  /** SENTINEL FAILOVER, then waits until Sentinel names the other server and it answers as master. */
  failover(): Promise<{ from: number; to: number }>;
  /** Waits until the master has its replica back (Sentinel turns the old master into one within ~10 s). */
  replicated(): Promise<void>;
  stop(): Promise<void>;
}

/** A master, one replica of it, and one Sentinel (quorum 1) watching them. */
export async function startRedisSentinel(name = 'gatehouse'): Promise<RedisSentinel> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-sentinel-'));
  const master = await startRedisServer();
  const replica = await startRedisServer(undefined, { extraArgs: ['--replicaof', '127.0.0.1', String(master.port)] });
  const conf = path.join(dir, 'sentinel.conf');
  fs.writeFileSync(
    conf,
    [
      `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
      `sentinel down-after-milliseconds ${name} 2000`,
      `sentinel failover-timeout ${name} 10000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'),
  );
  const sentinel = await startRedisServer(undefined, { configFile: conf, extraArgs: ['--sentinel'] });
  const admin = new Redis(sentinel.url, { maxRetriesPerRequest: 1 });
  const servers = [master, replica];
  const masterPort = async () => Number(((await admin.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)) as string[])[1]);
  const linkUp = async (port: number) => {
    const r = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    try {
      return (await r.info('replication')).includes('master_link_status:up');
    } finally {
      r.disconnect();
    }
  };
  // Sentinel must have found the replica before it can fail over to it.
  await untilRedis('Sentinel to discover the replica', async () => {
    const replicas = (await admin.call('SENTINEL', 'REPLICAS', name)) as string[][];
    return replicas.length === 1 && (await linkUp(replica.port));
  });
  return {
    settings: { mode: 'sentinel', sentinels: [`127.0.0.1:${sentinel.port}`], name },
    name,
    servers,
    sentinel,
    admin,
    masterPort,
    async failover() {
      const from = await masterPort();
      await admin.call('SENTINEL', 'FAILOVER', name);
      let to = from;
      await untilRedis('Sentinel to promote the replica', async () => {
        to = await masterPort();
        if (to === from) return false;
        const r = new Redis(to, '127.0.0.1', { maxRetriesPerRequest: 1 });
        try {
          return (await r.info('replication')).includes('role:master');
        } finally {
          r.disconnect();
        }
      });
      return { from, to };
    },
    async replicated() {
      await untilRedis(
        'the old master to follow the new one',
        async () => {
          const r = new Redis(await masterPort(), '127.0.0.1', { maxRetriesPerRequest: 1 });
          try {
            const info = await r.info('replication');
            return info.includes('role:master') && /connected_slaves:1\b/.test(info) && info.includes('state=online');
          } finally {
            r.disconnect();
          }
        },
        30_000,
      );
    },
    async stop() {
      admin.disconnect();
      await sentinel.kill();
      await Promise.all(servers.map((s) => s.kill()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** waitFor at Redis's pace: every 100 ms, up to 20 s, and a check that throws (a node not up yet) means "not yet". */
function untilRedis(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  return waitFor(what, () => check().catch(() => false), timeoutMs, 100);
}
