/**
 * A group of module Web Workers, each wrapped with comlink, called together: the part the
 * gradient pool (`src/train/pool.ts`) and the DiT pool (`src/model/dit_pool.ts`) share.
 *
 * {@linkcode WorkerGroup.run} calls every worker and waits for all; the first failure, a call
 * that rejects or a worker that dies (an uncaught error), becomes the caller's error (made by
 * `fail`, naming the worker and the call), and the group then terminates every worker, so nothing
 * is left waiting.
 *
 * @module
 */

import * as Comlink from "comlink";

/** Options of {@linkcode startWorkers}. */
export interface WorkerGroupOptions {
  /** The error for worker `k` failing at call `id`, from one line of detail. */
  fail: (k: number, id: number, detail: string, cause?: unknown) => Error;
  /** The message of the error a call on a terminated group rejects with. */
  terminatedMessage: string;
  /** Runs first when the group terminates (e.g. to wake workers waiting on shared memory). */
  onTerminate?: () => void;
}

/** Workers called together: see {@linkcode startWorkers}. */
export interface WorkerGroup<Api> {
  /** The workers. */
  readonly size: number;
  /**
   * Calls `f` on every worker for call `id` and waits for all.
   *
   * @param id The call's number, for messages.
   * @param f The call on worker `k`.
   * @returns The results in worker order.
   */
  run<R>(id: number, f: (api: Comlink.Remote<Api>, k: number) => Promise<R>): Promise<R[]>;
  /** Stops every worker. Safe to call twice. */
  terminate(): void;
}

/**
 * Starts `W` module workers from `url`.
 *
 * @param url The worker module.
 * @param W How many.
 * @param options `fail`, `terminatedMessage`, `onTerminate`.
 * @returns The group.
 */
export function startWorkers<Api>(
  url: string | URL,
  W: number,
  options: WorkerGroupOptions,
): WorkerGroup<Api> {
  const workers: Worker[] = [];
  const apis: Comlink.Remote<Api>[] = [];
  let current = 0; // the call being made, for messages
  let failure: Error | undefined;
  let rejectDeath: (e: Error) => void = () => {};
  const death = new Promise<never>((_, reject) => {
    rejectDeath = reject;
  });
  death.catch(() => {}); // observed through Promise.race below
  let terminated = false;
  const terminate = () => {
    if (terminated) return;
    terminated = true;
    options.onTerminate?.();
    for (const w of workers) w.terminate();
  };
  for (let k = 0; k < W; k++) {
    const worker = new Worker(url, { type: "module" });
    const onError = (e: Event) => {
      e.preventDefault(); // keep the worker's error from taking down the main thread
      const msg = (e as ErrorEvent).message ?? "the worker stopped";
      failure ??= options.fail(k, current, `worker died (${msg})`);
      rejectDeath(failure);
    };
    worker.addEventListener("error", onError);
    worker.addEventListener("messageerror", onError);
    workers.push(worker);
    apis.push(Comlink.wrap<Api>(worker));
  }
  return {
    size: W,
    async run<R>(id: number, f: (api: Comlink.Remote<Api>, k: number) => Promise<R>) {
      if (terminated) throw new Error(options.terminatedMessage);
      current = id;
      const calls = apis.map((api, k) =>
        f(api, k).catch((e) => {
          const detail = e instanceof Error ? e.message : String(e);
          throw failure ??= options.fail(k, id, detail, e);
        })
      );
      try {
        return await Promise.race([Promise.all(calls), death]);
      } catch (e) {
        terminate();
        throw e;
      }
    },
    terminate,
  };
}
