/**
 * Child processes of the bench and what Linux says about them: every server under test runs in a process
 * of its own, so CPU time (utime + stime, all threads) and peak RSS (VmHWM) are read per process from
 * /proc/<pid>, without instrumenting the gateway.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
}

let clockTicks: number | undefined;
/** USER_HZ: /proc/<pid>/stat counts CPU time in these ticks (100 on every common Linux). */
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds the process has used so far (all its threads: JS, GC, libuv pool). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces: fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / ticksPerSecond();
}

/** CPU seconds the whole machine has been busy (all cores, every process): /proc/stat's first line. */
export function machineBusySeconds(): number {
  const [, user, nice, system, , , irq, softirq, steal] = readFileSync('/proc/stat', 'utf8')
    .split('\n')[0]!
    .trim()
    .split(/\s+/)
    .map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / ticksPerSecond();
}

/** Resident set size now and its peak (VmHWM), in bytes. */
export function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** A port that was free a moment ago (for servers that must know their URL before they start). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function track(name: string, proc: ChildProcess): Child {
  if (proc.pid === undefined) throw new Error(`${name}: could not start`);
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  return { name, proc, pid: proc.pid, exited };
}

/** A bench helper script (compiled next to this file) with an IPC channel; resolves once it sends `{ready}`. */
export async function forkHelper<T>(
  name: string,
  script: string,
  args: string[] = [],
): Promise<{ child: Child; ready: T; send: (m: unknown) => void }> {
  const proc = fork(script, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  const child = track(name, proc);
  const ready = await new Promise<T>((resolve, reject) => {
    proc.once('message', (m: { ready?: T }) =>
      m.ready !== undefined ? resolve(m.ready) : reject(new Error(`${name}: ${JSON.stringify(m)}`)),
    );
    void child.exited.then((code) => reject(new Error(`${name} exited (${code}) before it was ready`)));
  });
  return { child, ready, send: (m) => proc.send(m as object) };
}

/** A Node program (the gateway's own entry point) with an environment and output to `logFd`. */
export function spawnNode(name: string, script: string, env: NodeJS.ProcessEnv, execArgv: string[], logFd: number): Child {
  const proc = spawn(process.execPath, [...execArgv, script], { env, stdio: ['ignore', logFd, logFd] });
  return track(name, proc);
}

/** Polls `url` until it answers 200. */
export async function waitFor200(url: string, child: Child, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void child.exited.then(() => (gone = true));
  for (;;) {
    if (gone) throw new Error(`${child.name} exited before ${url} answered`);
    const ok = await fetch(url).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${child.name}: ${url} did not answer 200 within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stop(child: Child, graceMs = 5000): Promise<number | string> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return child.exited;
  child.proc.kill('SIGTERM');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
  const code = await child.exited;
  clearTimeout(timer);
  return code;
}
