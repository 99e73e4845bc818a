/**
 * The DiT worker `createDitPool` spawns: a comlink `expose()` over `ditWorkerApi()`. All the work
 * lives in `src/model/dit_pool.ts`.
 *
 * @module
 */

import * as Comlink from "comlink";
import { ditWorkerApi } from "../src/model/dit_pool.ts";

Comlink.expose(ditWorkerApi());
