/**
 * GPU-resident buffers and batched dispatches: the layer every WebGPU kernel wrapper sits on.
 *
 * A {@linkcode GpuContext} owns one device. Tensors ({@linkcode GpuTensor}) are storage buffers
 * that stay on the GPU between kernel calls; data crosses only through the explicit
 * {@linkcode GpuContext.upload}, {@linkcode GpuContext.write} and {@linkcode GpuContext.read}.
 * Kernel wrappers record their dispatches into the context's pending command encoder, so any
 * number of kernel calls go to the GPU as one command buffer, submitted by
 * {@linkcode GpuContext.flush} (or by `read`, which flushes first).
 *
 * Errors: the context keeps a validation error scope open; `read` and `sync` close it and throw
 * the first WebGPU validation error of the calls since the last check, with its message.
 *
 * @module
 */

/** Element type of a {@linkcode GpuTensor}: 32-bit floats or 32-bit signed integers. */
export type GpuDtype = "f32" | "i32";

/** A flat array of `length` 32-bit elements in one GPU storage buffer. */
export class GpuTensor {
  /** The storage buffer (at least 4 bytes, also for `length` 0). */
  readonly buffer: GPUBuffer;
  /** Elements. */
  readonly length: number;
  /** Element type. */
  readonly dtype: GpuDtype;

  /**
   * Wraps a buffer; use {@linkcode GpuContext.zeros} or {@linkcode GpuContext.upload} instead.
   *
   * @param buffer A storage buffer of at least `4 * length` bytes.
   * @param length Elements.
   * @param dtype Element type.
   */
  constructor(buffer: GPUBuffer, length: number, dtype: GpuDtype) {
    this.buffer = buffer;
    this.length = length;
    this.dtype = dtype;
  }

  /** Frees the GPU memory now; the tensor must not be used afterwards. */
  destroy(): void {
    this.buffer.destroy();
  }
}

/** One storage binding of a dispatch: a tensor, read only or read-write. */
export interface Binding {
  /** The tensor bound. */
  tensor: GpuTensor;
  /** Whether the shader writes it (declared `read_write`). */
  write: boolean;
}

/** Workgroups along x of a 1-D grid before it folds into y (WebGPU's guaranteed minimum). */
export const MAX_GROUPS_X = 65535;

/**
 * A 1-D grid of `groups` workgroups laid out within the per-dimension limit: `[x, y]` with
 * `x * y >= groups`. Shaders recover the linear workgroup index as `wg.y * nwg.x + wg.x`
 * (`entry` in `wgsl.ts` binds it as `group`) and skip indices past `groups`.
 *
 * @param groups Workgroups wanted.
 * @returns The dispatch's x and y counts.
 */
export function grid(groups: number): [number, number] {
  if (groups <= MAX_GROUPS_X) return [groups, 1];
  const y = Math.ceil(groups / MAX_GROUPS_X);
  return [Math.ceil(groups / y), y];
}

const STORAGE_USAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST
const UNIFORM_USAGE = 0x0040; // UNIFORM
const READBACK_USAGE = 0x0001 | 0x0008; // MAP_READ | COPY_DST
const MAP_READ = 0x0001;

/**
 * One device's tensors, compiled kernels and pending command encoder.
 *
 * @example Upload, run nothing, read back
 * ```ts
 * import assert from "node:assert/strict";
 * import { acquireGpu } from "./device.ts";
 * import { GpuContext } from "./context.ts";
 *
 * const gpu = await acquireGpu();
 * if (gpu.ok) {
 *   const ctx = new GpuContext(gpu.device);
 *   const t = ctx.upload(new Float32Array([1, 2, 3]));
 *   assert.deepEqual([...await ctx.read(t)], [1, 2, 3]);
 *   await ctx.destroy();
 * }
 * ```
 */
export class GpuContext {
  /** The device every tensor and kernel of this context belongs to. */
  readonly device: GPUDevice;
  #encoder: GPUCommandEncoder | null = null;
  #pipelines = new Map<string, GPUComputePipeline>();
  #spent: GPUBuffer[] = []; // per-dispatch uniform buffers, freed once their work is done
  #dummy: GpuTensor | null = null;
  #dispatches = 0;

  /**
   * A context on `device`, with no tensors yet and an open validation error scope.
   *
   * @param device A device, for example from `acquireGpu`.
   */
  constructor(device: GPUDevice) {
    this.device = device;
    device.pushErrorScope("validation");
  }

  /** Dispatches recorded since the context was made (all kernel calls together). */
  get dispatches(): number {
    return this.#dispatches;
  }

  /**
   * A zero-filled tensor.
   *
   * @param length Elements (an integer >= 0).
   * @param dtype Element type (default `"f32"`).
   * @returns The tensor, on the GPU.
   */
  zeros(length: number, dtype: GpuDtype = "f32"): GpuTensor {
    if (!Number.isInteger(length) || length < 0) {
      throw new RangeError(`GpuTensor length: expected an integer >= 0, got ${length}`);
    }
    const buffer = this.device.createBuffer({
      size: Math.max(4, 4 * length),
      usage: STORAGE_USAGE,
    });
    return new GpuTensor(buffer, length, dtype);
  }

  /**
   * A tensor holding a copy of `data` (`Float32Array` gives `"f32"`, `Int32Array` `"i32"`).
   *
   * @param data The values.
   * @returns The tensor, on the GPU.
   */
  upload(data: Float32Array | Int32Array): GpuTensor {
    const t = this.zeros(data.length, data instanceof Int32Array ? "i32" : "f32");
    this.write(t, data);
    return t;
  }

  /**
   * Overwrites the first `data.length` elements of `t` (ordered after every dispatch already
   * submitted, and before the pending ones: it flushes first).
   *
   * @param t The tensor.
   * @param data The values, of `t`'s element type.
   */
  write(t: GpuTensor, data: Float32Array | Int32Array): void {
    const want = t.dtype === "i32" ? "Int32Array" : "Float32Array";
    if ((data instanceof Int32Array) !== (t.dtype === "i32")) {
      throw new TypeError(`GpuTensor write: expected an ${want}, got ${data.constructor.name}`);
    }
    if (data.length > t.length) {
      throw new RangeError(
        `GpuTensor write: expected at most ${t.length} elements, got ${data.length}`,
      );
    }
    if (data.length === 0) return;
    this.flush();
    // a view on a SharedArrayBuffer is copied first: writeBuffer takes ArrayBuffer-backed data
    const src = (data.buffer instanceof ArrayBuffer ? data : data.slice()) as Float32Array<
      ArrayBuffer
    >;
    this.device.queue.writeBuffer(t.buffer, 0, src);
  }

  /**
   * Zeroes a tensor on the GPU, recorded into the pending encoder (ordered with the dispatches
   * around it; no data crosses).
   *
   * @param t The tensor.
   */
  clear(t: GpuTensor): void {
    this.#pending().clearBuffer(t.buffer, 0, Math.max(4, 4 * t.length));
  }

  /**
   * Copies a tensor back: flushes the pending dispatches, waits for them, and throws the first
   * WebGPU validation error since the last check.
   *
   * @param t The tensor.
   * @returns A `Float32Array` for `"f32"`, an `Int32Array` for `"i32"`.
   */
  async read(t: GpuTensor): Promise<Float32Array | Int32Array> {
    const bytes = Math.max(4, 4 * t.length);
    const staging = this.device.createBuffer({ size: bytes, usage: READBACK_USAGE });
    const enc = this.#pending();
    enc.copyBufferToBuffer(t.buffer, 0, staging, 0, bytes);
    this.flush();
    try {
      await staging.mapAsync(MAP_READ);
      const copy = staging.getMappedRange().slice(0, 4 * t.length);
      staging.unmap();
      await this.sync();
      return t.dtype === "i32" ? new Int32Array(copy) : new Float32Array(copy);
    } finally {
      staging.destroy();
    }
  }

  /** {@linkcode GpuContext.read} for an `"f32"` tensor. */
  async readF32(t: GpuTensor): Promise<Float32Array> {
    if (t.dtype !== "f32") throw new TypeError(`readF32: expected an f32 tensor, got ${t.dtype}`);
    return await this.read(t) as Float32Array;
  }

  /**
   * Submits the pending dispatches (if any) as one command buffer. Does not wait.
   */
  flush(): void {
    if (this.#encoder === null) return;
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
  }

  /**
   * Flushes, waits until the GPU is idle, frees spent uniform buffers and throws the first
   * validation error since the last check (a `GPUValidationError`'s message, prefixed).
   */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    for (const b of this.#spent) b.destroy();
    this.#spent = [];
    const err = await this.device.popErrorScope();
    this.device.pushErrorScope("validation");
    if (err) throw new Error(`WebGPU validation error: ${err.message.split("\n")[0]}`);
  }

  /** Waits for the GPU, checks for errors, and destroys the device. */
  async destroy(): Promise<void> {
    try {
      await this.sync();
    } finally {
      await this.device.popErrorScope().catch(() => null);
      this.device.destroy();
    }
  }

  /**
   * A compute pipeline compiled once per `key` from WGSL `code` (entry point `main`, layout
   * inferred from the shader).
   *
   * @param key Cache key: one per distinct shader text.
   * @param code WGSL source, built only on the first call for `key`.
   * @returns The pipeline.
   */
  pipeline(key: string, code: () => string): GPUComputePipeline {
    let p = this.#pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ label: key, code: code() });
      p = this.device.createComputePipeline({
        label: key,
        layout: "auto",
        compute: { module, entryPoint: "main" },
      });
      this.#pipelines.set(key, p);
    }
    return p;
  }

  /**
   * A 1-element tensor bound where a kernel's optional input is absent (its shader reads it
   * only when a flag says the input is there).
   */
  get dummy(): GpuTensor {
    if (!this.#dummy) this.#dummy = this.zeros(1);
    return this.#dummy;
  }

  /**
   * Records one dispatch into the pending encoder: storage tensors at bindings `0 ..`, then
   * the uniform block `params` (32-bit words) at the next binding.
   *
   * @param pipeline From {@linkcode GpuContext.pipeline}.
   * @param tensors The storage tensors, in binding order.
   * @param params The uniform block's words: numbers are written as u32 unless listed in
   *   `floats` (indices of words to write as f32).
   * @param groups Workgroups along x and y.
   * @param floats Indices into `params` holding f32 values.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    tensors: readonly GpuTensor[],
    params: readonly number[],
    groups: readonly [number, number],
    floats: readonly number[] = [],
  ): void {
    if (groups[0] === 0 || groups[1] === 0) return;
    const limit = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (groups[0] > limit || groups[1] > limit) {
      throw new RangeError(
        `dispatch of ${pipeline.label}: expected at most ${limit} workgroups per dimension, ` +
          `got ${groups[0]} x ${groups[1]} (the shape is too large for this kernel)`,
      );
    }
    const words = Math.max(4, Math.ceil(params.length / 4) * 4);
    const uniform = this.device.createBuffer({
      size: 4 * words,
      usage: UNIFORM_USAGE,
      mappedAtCreation: true,
    });
    const range = uniform.getMappedRange();
    const u = new Uint32Array(range), f = new Float32Array(range);
    params.forEach((v, i) => {
      if (floats.includes(i)) f[i] = v;
      else u[i] = v;
    });
    uniform.unmap();
    this.#spent.push(uniform);
    const entries: GPUBindGroupEntry[] = tensors.map((t, i) => ({
      binding: i,
      resource: { buffer: t.buffer },
    }));
    entries.push({ binding: tensors.length, resource: { buffer: uniform } });
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries,
    });
    const pass = this.#pending().beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(groups[0], groups[1]);
    pass.end();
    this.#dispatches++;
  }

  #pending(): GPUCommandEncoder {
    if (this.#encoder === null) this.#encoder = this.device.createCommandEncoder();
    return this.#encoder;
  }
}

/**
 * Throws a RangeError unless `t` holds at least `need` elements of type `dtype`.
 *
 * @param what The argument's name and shape, for the message.
 * @param t The tensor.
 * @param need Elements required.
 * @param dtype Element type required (default `"f32"`).
 */
export function checkTensor(
  what: string,
  t: GpuTensor,
  need: number,
  dtype: GpuDtype = "f32",
): void {
  if (!(t instanceof GpuTensor)) {
    throw new TypeError(`${what}: expected a GpuTensor, got ${typeof t}`);
  }
  if (t.dtype !== dtype) throw new TypeError(`${what}: expected ${dtype}, got ${t.dtype}`);
  if (t.length < need) {
    throw new RangeError(`${what}: expected at least ${need} elements, got ${t.length}`);
  }
}

/**
 * Throws a RangeError unless every named dimension is an integer >= 0.
 *
 * @param kernel The kernel's name, for the message.
 * @param dims Name and value of each dimension.
 */
export function checkDims(kernel: string, dims: Record<string, number>): void {
  for (const [name, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(`${kernel} dimension ${name}: expected an integer >= 0, got ${v}`);
    }
  }
}
