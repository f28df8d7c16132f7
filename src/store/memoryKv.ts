import type { Kv } from './kv';
import { versionOf } from './kv';

interface Entry {
  value: string;
  expiresAt: number;
}

/** Single-process store for development and tests of one instance; expired entries are swept lazily. */
export class MemoryKv implements Kv {
  private readonly map = new Map<string, Entry>();
  private readonly hashes = new Map<string, { fields: Map<string, string>; expiresAt: number }>();
  private readonly schedules = new Map<string, Map<string, number>>();
  private sweepAt = 0;

  constructor(private readonly now: () => number = Date.now) {}

  private read(key: string): string | null {
    const e = this.map.get(key);
    if (!e) return null;
    if (e.expiresAt <= this.now()) {
      this.map.delete(key);
      return null;
    }
    return e.value;
  }

  private write(key: string, value: string, ttlMs: number): void {
    const now = this.now();
    this.map.set(key, { value, expiresAt: now + Math.max(1, ttlMs) });
    if (now >= this.sweepAt) {
      this.sweepAt = now + 60_000;
      for (const [k, e] of this.map) if (e.expiresAt <= now) this.map.delete(k);
    }
  }

  async get(key: string) {
    return this.read(key);
  }
  async getPair(a: string, b: string): Promise<[string | null, string | null]> {
    return [this.read(a), this.read(b)];
  }
  async set(key: string, value: string, ttlMs: number) {
    this.write(key, value, ttlMs);
  }
  async replace(key: string, value: string, ttlMs: number) {
    if (this.read(key) === null) return false;
    this.write(key, value, ttlMs);
    return true;
  }
  async replaceWithCompanion(key: string, value: string, ttlMs: number, companion: string, companionTtlMs: number) {
    if (!(await this.replace(key, value, ttlMs))) return false;
    await this.expire(companion, companionTtlMs);
    return true;
  }
  async setIfAbsent(key: string, value: string, ttlMs: number) {
    if (this.read(key) !== null) return false;
    this.write(key, value, ttlMs);
    return true;
  }
  async getDel(key: string) {
    const v = this.read(key);
    this.map.delete(key);
    return v;
  }
  async del(...keys: string[]) {
    for (const k of keys) this.map.delete(k);
  }
  async expire(key: string, ttlMs: number) {
    const v = this.read(key);
    if (v !== null) this.write(key, v, ttlMs);
  }
  async compareAndSet(key: string, expected: number, value: string, ttlMs: number | 'keep') {
    if (versionOf(this.read(key)) !== expected) return false;
    const current = this.map.get(key);
    this.write(key, value, ttlMs === 'keep' ? (current ? current.expiresAt - this.now() : 0) : ttlMs);
    return true;
  }
  async swapLock(key: string, owner: string, value: string, ttlMs: number) {
    if (this.read(key) !== owner) return false;
    this.write(key, value, ttlMs);
    return true;
  }
  async releaseLock(key: string, owner: string) {
    if (this.read(key) !== owner) return false;
    this.map.delete(key);
    return true;
  }
  async renewLock(key: string, owner: string, ttlMs: number) {
    if (this.read(key) !== owner) return false;
    this.write(key, owner, ttlMs);
    return true;
  }
  async hashPut(key: string, field: string, value: string, ttlMs: number) {
    const now = this.now();
    let h = this.hashes.get(key);
    if (!h || h.expiresAt <= now) this.hashes.set(key, (h = { fields: new Map(), expiresAt: now }));
    h.fields.set(field, value);
    h.expiresAt = Math.max(h.expiresAt, now + ttlMs);
  }
  async hashDelete(key: string, ...fields: string[]) {
    const h = this.hashes.get(key);
    if (!h) return;
    for (const f of fields) h.fields.delete(f);
    if (h.fields.size === 0) this.hashes.delete(key);
  }
  async hashGetAll(key: string) {
    const h = this.hashes.get(key);
    if (!h || h.expiresAt <= this.now()) return {};
    return Object.fromEntries(h.fields);
  }
  async hashTake(key: string, field: string) {
    const h = (await this.hashGetAll(key))[field] ?? null;
    await this.hashDelete(key, field);
    return h;
  }
  async schedule(key: string, member: string, atMs: number, _keyTtlMs: number) {
    let z = this.schedules.get(key);
    if (!z) this.schedules.set(key, (z = new Map<string, number>()));
    z.set(member, atMs);
  }
  async reschedule(key: string, member: string, atMs: number) {
    const z = this.schedules.get(key);
    if (z?.has(member)) z.set(member, atMs);
  }
  async unschedule(key: string, member: string) {
    this.schedules.get(key)?.delete(member);
  }
  async due(key: string, nowMs: number, limit: number) {
    const z = this.schedules.get(key);
    if (!z) return [];
    return [...z]
      .filter(([, at]) => at <= nowMs)
      .sort((a, b) => a[1] - b[1])
      .slice(0, limit)
      .map(([m]) => m);
  }
  async claim(key: string, member: string) {
    return this.schedules.get(key)?.delete(member) ?? false;
  }
  async admit(key: string, member: string, untilMs: number, nowMs: number, max: number) {
    let z = this.schedules.get(key);
    if (!z) this.schedules.set(key, (z = new Map<string, number>()));
    // Members that left are swept only when the set looks full: a sweep walks every member.
    if (z.size >= max) for (const [m, at] of z) if (at <= nowMs) z.delete(m);
    if (z.size >= max) return false;
    z.set(member, untilMs);
    return true;
  }
  async countInWindow(key: string, windowMs: number) {
    const e = this.map.get(key);
    const live = e !== undefined && e.expiresAt > this.now();
    const n = (live ? Number(e.value) : 0) + 1;
    this.map.set(key, { value: String(n), expiresAt: live ? e.expiresAt : this.now() + windowMs });
    return n;
  }
  /** One process holds everything: nothing to replicate. */
  async durable(): Promise<void> {}
  async ping() {}
  /** Test and CLI helper: number of live keys. */
  size(): number {
    return [...this.map.keys()].filter((k) => this.read(k) !== null).length;
  }
}
