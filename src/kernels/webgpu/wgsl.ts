/**
 * WGSL pieces the kernels share: the entry point over a folded 1-D grid of workgroups (see
 * `grid` in `context.ts`) and workgroup-wide reductions.
 *
 * @module
 */

/**
 * WGSL: `fn main` of a kernel with `size` invocations per workgroup, opened (the caller writes
 * the body and the closing brace). It binds `wg`, `nwg` and `lid` (the builtins), `group` (the
 * linear workgroup index, `wg.y * nwg.x + wg.x`, for grids folded by `grid`) and `l` (the
 * invocation's index in its workgroup).
 *
 * @param size Invocations per workgroup.
 * @returns The WGSL text.
 */
export function entry(size: number): string {
  return `@compute @workgroup_size(${size})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_id) lid: vec3u) {
  let group = wg.y * nwg.x + wg.x;
  let l = lid.x;`;
}

/**
 * WGSL: `wgSum(v, l)` and `wgMax(v, l)`, the sum and the maximum of `v` over the `size`
 * invocations of a workgroup (`l` the invocation's index), the same result in each. Pairwise in
 * workgroup memory: partial results `l` and `l + s` combine for `s = size/2, size/4, ... 1`.
 * Both contain barriers, so they must be called from uniform control flow.
 *
 * @param size Invocations per workgroup (a power of two).
 * @returns The WGSL text.
 */
export function reductions(size: number): string {
  const fn = (name: string, combine: string) => `
fn ${name}(v: f32, l: u32) -> f32 {
  red[l] = v;
  workgroupBarrier();
  for (var s = ${size / 2}u; s > 0u; s >>= 1u) {
    if (l < s) { red[l] = ${combine}; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;
  return `var<workgroup> red: array<f32, ${size}>;` + fn("wgSum", "red[l] + red[l + s]") +
    fn("wgMax", "max(red[l], red[l + s])");
}
