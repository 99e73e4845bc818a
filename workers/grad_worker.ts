/**
 * The gradient worker the trainer spawns: a comlink `expose()` over `shardWorkerApi()`.
 * All the work lives in `src/train/shard.ts`.
 *
 * @module
 */

import * as Comlink from "comlink";
import { shardWorkerApi } from "../src/train/shard.ts";

Comlink.expose(shardWorkerApi());
