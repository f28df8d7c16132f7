/**
 * Which process opened a loopback TCP connection, from Linux's own tables: the connection's inode in
 * /proc/net/tcp (found by its two ports), then the process among the candidates holding a descriptor on
 * that socket. The soak's IdP proxy uses it to tell which gateway replica sent a token request, without any
 * header or change in the gateway.
 *
 * Lookups are batched: one scan (synchronous, a millisecond or two) answers every connection waiting at that
 * moment, at most every `everyMs`. Asynchronous file reads would queue in libuv's thread pool behind the
 * IdP's RSA signatures (WebCrypto runs there too) and slow the IdP down.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export class Owners {
  private readonly known = new Map<number, number>();
  private readonly waiting = new Map<number, Array<(pid: number | undefined) => void>>();
  private timer: NodeJS.Timeout | undefined;
  private lastScan = 0;

  constructor(
    private readonly serverPort: number,
    private readonly candidates: () => readonly number[],
    private readonly everyMs = 100,
  ) {}

  /** The pid of the candidate that connected from `clientPort`; undefined when it is none of them. */
  of(clientPort: number): Promise<number | undefined> {
    const pid = this.known.get(clientPort);
    if (pid !== undefined) return Promise.resolve(pid);
    return new Promise((resolve) => {
      const list = this.waiting.get(clientPort);
      if (list) list.push(resolve);
      else this.waiting.set(clientPort, [resolve]);
      this.timer ??= setTimeout(() => this.scan(), Math.max(0, this.lastScan + this.everyMs - Date.now()));
    });
  }

  /** The connection closed: its port may be reused by another process. */
  forget(clientPort: number): void {
    this.known.delete(clientPort);
  }

  private scan(): void {
    this.timer = undefined;
    this.lastScan = Date.now();
    const waiting = new Map(this.waiting);
    this.waiting.clear();
    // inode → client port, for the connections to our server (the client's side: rem_address is the server).
    const want = `:${this.serverPort.toString(16).toUpperCase().padStart(4, '0')}`;
    const portOf = new Map<string, number>();
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      let text = '';
      try {
        text = readFileSync(table, 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n')) {
        const f = line.trim().split(/\s+/);
        if (!f[2]?.endsWith(want) || !f[9] || f[9] === '0') continue;
        const port = parseInt(f[1]!.slice(f[1]!.lastIndexOf(':') + 1), 16);
        if (waiting.has(port)) portOf.set(f[9], port);
      }
    }
    const found = new Map<number, number>();
    if (portOf.size > 0) {
      for (const pid of this.candidates()) {
        let fds: string[] = [];
        try {
          fds = readdirSync(`/proc/${pid}/fd`);
        } catch {
          continue;
        }
        for (const fd of fds) {
          let link = '';
          try {
            link = readlinkSync(`/proc/${pid}/fd/${fd}`);
          } catch {
            continue;
          }
          const port = link.startsWith('socket:[') ? portOf.get(link.slice(8, -1)) : undefined;
          if (port !== undefined) found.set(port, pid);
        }
      }
    }
    for (const [port, resolvers] of waiting) {
      const pid = found.get(port);
      if (pid !== undefined) this.known.set(port, pid);
      for (const r of resolvers) r(pid);
    }
  }
}
