// Whether the BLAS backend's tests run here: the system's CBLAS loaded once for every test file
// that needs it. CI (CI=true) requires it: .ci/run installs Debian's libopenblas0-pthread.

import { envVar } from "../../src/ffi.ts";
import { loadBlas } from "../../src/kernels/blas.ts";

/** The library, or why there is none. */
export const blasLoad = loadBlas();

/** True in CI, where a missing library must fail the suite instead of skipping it. */
export const blasRequired = envVar("CI") === "true";

/**
 * `ignore` for a test that needs the library: ignored where it is missing, except in CI, where
 * the test runs and fails on the missing library.
 */
export const ignoreBlas = !blasLoad.ok && !blasRequired;

if (!blasLoad.ok) {
  console.error(
    `BLAS tests ${
      blasRequired ? "will FAIL (CI requires the library)" : "ignored"
    }: ${blasLoad.reason}`,
  );
}
