/** The parent's handle on the load-generator process (load.ts): one request at a time over IPC. */
import { resolve } from 'node:path';
import { forkHelper, type Child } from './procs';
import type { LoadResult, LoadSpec, WaveResult, WaveSpec } from './load';
import type { EchoResult, EchoSpec, IdleClosed, IdleResult, IdleSpec } from './wsLoad';

export interface Loader {
  readonly child: Child;
  load(spec: LoadSpec): Promise<LoadResult>;
  wave(spec: WaveSpec): Promise<WaveResult>;
  /** WebSocket echo load (pipelined messages on a fixed number of sockets). */
  echo(spec: EchoSpec): Promise<EchoResult>;
  /** Opens idle WebSockets, held by the load generator until closeIdle(). */
  openIdle(spec: IdleSpec): Promise<IdleResult>;
  closeIdle(): Promise<IdleClosed>;
}

export async function startLoader(): Promise<Loader> {
  const { child, send } = await forkHelper<number>('load generator', resolve(__dirname, 'load.js'));
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.proc.on('message', (m: { id?: number; result?: unknown; error?: string }) => {
    const p = m.id === undefined ? undefined : pending.get(m.id);
    if (!p) return;
    pending.delete(m.id!);
    if (m.error !== undefined) p.reject(new Error(`load generator: ${m.error}`));
    else p.resolve(m.result);
  });
  void child.exited.then((code) => {
    for (const p of pending.values()) p.reject(new Error(`load generator exited (${code})`));
  });
  const call = <T>(kind: string, spec: object) =>
    new Promise<T>((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      send({ id, kind, ...spec });
    });
  return {
    child,
    load: (spec) => call<LoadResult>('load', spec),
    wave: (spec) => call<WaveResult>('wave', spec),
    echo: (spec) => call<EchoResult>('echo', spec),
    openIdle: (spec) => call<IdleResult>('openIdle', spec),
    closeIdle: () => call<IdleClosed>('closeIdle', {}),
  };
}
