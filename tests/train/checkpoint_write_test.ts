import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import {
  makeTempDir,
  removeDir,
  WriteError,
  writeFileAtomic,
  writeFilesAtomic,
} from "../../src/io.ts";
import { CheckpointError } from "../../src/train/checkpointing.ts";
import { loadCheckpoint, loadRun } from "../../src/train/run_dir.ts";
import { train, type TrainOptions } from "../../src/train/train.ts";
import { tinyRun } from "./fixture.ts";

const base: TrainOptions = { ...tinyRun, steps: 6, seed: 4, checkpointEvery: 2 };

/** Whether chmod 0o555 stops this process writing into a directory (not so for root). */
async function readOnlyDirsStopWrites(): Promise<boolean> {
  const dir = await makeTempDir();
  try {
    await fs.chmod(dir, 0o555);
    await fs.writeFile(`${dir}/probe`, "x");
    return false;
  } catch {
    return true;
  } finally {
    await fs.chmod(dir, 0o755);
    await removeDir(dir);
  }
}

/** The run directory holds the checkpoint of `step`, whole, and no temporary file. */
async function assertKept(dir: string, params: Float32Array, step = 2): Promise<void> {
  const run = await loadRun(dir);
  assert.equal(run.step, step);
  assert.deepEqual(run.model.params, params);
  const ckpt = await loadCheckpoint(dir);
  assert.equal(ckpt.step, step);
  assert.deepEqual(ckpt.model.params, params);
  const names = await fs.readdir(dir);
  assert.deepEqual(names.filter((n) => n.endsWith(".tmp")), [], names.join(", "));
}

/** A one-line CheckpointError of step 4 naming the file, its cause and the kept step. */
function checkError(
  dir: string,
  file: string,
  cause: RegExp,
  what = "Checkpoint",
  kept = 2,
): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof CheckpointError, String(e));
    assert.equal(e.step, 4);
    assert.doesNotMatch(e.message, /\n/);
    assert.ok(
      e.message.startsWith(`${what} of step 4 failed: Could not write ${dir}/${file}: `),
      e.message,
    );
    assert.match(e.message, cause);
    assert.ok(
      e.message.endsWith(`the last good checkpoint (step ${kept}) is kept in ${dir}`),
      e.message,
    );
    return true;
  };
}

// model.safetensors is written first, optimizer.safetensors second: a fault at the second comes
// after the first's temporary file is complete, and must still leave the first file untouched.
for (const file of ["model.safetensors", "optimizer.safetensors"] as const) {
  Deno.test(`train() whose checkpoint write fails at ${file} (injected, as a full disk) stops, keeping the previous checkpoint whole`, async () => {
    const dir = await makeTempDir();
    try {
      let atTwo: Float32Array | undefined;
      const steps: number[] = [];
      await assert.rejects(
        train({
          ...base,
          out: dir,
          writeFault: { step: 4, file },
          onStep: (i, m) => {
            steps.push(i.step);
            if (i.step === 2) atTwo = m.params.slice();
          },
        }),
        checkError(dir, file, /injected write fault \(no space left\)/),
      );
      assert.deepEqual(steps, [1, 2, 3], "the run stopped at the failed checkpoint");
      await assertKept(dir, atTwo!);
      // And it resumes from there.
      const resumed = await train({ ...base, out: dir, resume: true, steps: 3 });
      assert.deepEqual(resumed.history.map((h) => h.step), [3]);
    } finally {
      await removeDir(dir);
    }
  });
}

Deno.test("train() whose loss chart fails after a checkpoint stops, and says that checkpoint is kept", async () => {
  const dir = await makeTempDir();
  try {
    let atFour: Float32Array | undefined;
    await assert.rejects(
      train({
        ...base,
        out: dir,
        writeFault: { step: 4, file: "loss.svg" },
        onStep: (i, m) => {
          if (i.step === 4) atFour = m.params.slice();
        },
      }),
      checkError(dir, "loss.svg", /injected write fault/, "Loss chart", 4),
    );
    // onStep of step 4 never ran (the run stopped in its record): take the weights from disk.
    assert.equal(atFour, undefined);
    await assertKept(dir, (await loadRun(dir)).model.params, 4);
  } finally {
    await removeDir(dir);
  }
});

const stopsWrites = await readOnlyDirsStopWrites();
Deno.test({
  name: "train() in a run directory made read-only after its first checkpoint stops, keeping it" +
    (stopsWrites ? "" : " (skipped: running as root, which chmod does not stop)"),
  ignore: !stopsWrites,
  fn: async () => {
    const dir = await makeTempDir();
    try {
      let atTwo: Float32Array | undefined;
      await assert.rejects(
        train({
          ...base,
          out: dir,
          onStep: async (i, m) => {
            if (i.step !== 2) return;
            atTwo = m.params.slice();
            await fs.chmod(dir, 0o555);
          },
        }),
        checkError(dir, "model.safetensors", /EACCES|permission denied/i),
      );
      await fs.chmod(dir, 0o755);
      await assertKept(dir, atTwo!);
    } finally {
      await fs.chmod(dir, 0o755).catch(() => {});
      await removeDir(dir);
    }
  },
});

Deno.test("writeFileAtomic() that fails leaves the old file and no temporary file, naming the path", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/a.txt`, "old");
    await assert.rejects(
      writeFileAtomic(`${dir}/a.txt`, "new", {
        beforeRename: () => {
          throw new Error("ENOSPC: no space left on device");
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof WriteError);
        assert.equal(e.path, `${dir}/a.txt`);
        assert.equal(e.message, `Could not write ${dir}/a.txt: ENOSPC: no space left on device`);
        return true;
      },
    );
    assert.equal(await fs.readFile(`${dir}/a.txt`, "utf8"), "old");
    assert.deepEqual(await fs.readdir(dir), ["a.txt"]);
    // A path whose directory is a file cannot be written either: the same typed error.
    await assert.rejects(writeFileAtomic(`${dir}/a.txt/b`, "x"), WriteError);
  } finally {
    await removeDir(dir);
  }
});

Deno.test("writeFilesAtomic() that fails at its second file leaves both old files and no temporary file", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/a.txt`, "old a");
    await writeFileAtomic(`${dir}/b.txt`, "old b");
    const seen: string[] = [];
    await assert.rejects(
      writeFilesAtomic([{ path: `${dir}/a.txt`, data: "new a" }, {
        path: `${dir}/b.txt`,
        data: "new b",
      }], {
        beforeRename: (file) => {
          seen.push(file);
          if (file.endsWith("b.txt")) throw new Error("ENOSPC: no space left on device");
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof WriteError);
        assert.equal(e.path, `${dir}/b.txt`);
        assert.equal(e.message, `Could not write ${dir}/b.txt: ENOSPC: no space left on device`);
        return true;
      },
    );
    assert.deepEqual(seen, [`${dir}/a.txt`, `${dir}/b.txt`], "a's temporary file was complete");
    assert.equal(await fs.readFile(`${dir}/a.txt`, "utf8"), "old a");
    assert.equal(await fs.readFile(`${dir}/b.txt`, "utf8"), "old b");
    assert.deepEqual((await fs.readdir(dir)).sort(), ["a.txt", "b.txt"]);
    // Without a fault both are replaced.
    await writeFilesAtomic([{ path: `${dir}/a.txt`, data: "new a" }, {
      path: `${dir}/b.txt`,
      data: "new b",
    }]);
    assert.equal(await fs.readFile(`${dir}/a.txt`, "utf8"), "new a");
    assert.equal(await fs.readFile(`${dir}/b.txt`, "utf8"), "new b");
  } finally {
    await removeDir(dir);
  }
});

Deno.test("writeFilesAtomic() whose second rename fails says the first was already replaced", async () => {
  const dir = await makeTempDir();
  try {
    await writeFileAtomic(`${dir}/a.txt`, "old a");
    await fs.mkdir(`${dir}/b`); // a non-empty directory: a file cannot be renamed over it
    await fs.writeFile(`${dir}/b/keep`, "x");
    await assert.rejects(
      writeFilesAtomic([{ path: `${dir}/a.txt`, data: "new a" }, { path: `${dir}/b`, data: "b" }]),
      (e: unknown) => {
        assert.ok(e instanceof WriteError);
        assert.equal(e.path, `${dir}/b`);
        assert.doesNotMatch(e.message, /\n/);
        assert.ok(e.message.startsWith(`Could not write ${dir}/b: `), e.message);
        assert.ok(e.message.endsWith(`(${dir}/a.txt already replaced)`), e.message);
        return true;
      },
    );
    assert.equal(await fs.readFile(`${dir}/a.txt`, "utf8"), "new a");
    assert.deepEqual((await fs.readdir(dir)).sort(), ["a.txt", "b"], "no temporary file left");
  } finally {
    await removeDir(dir);
  }
});

Deno.test("loadRun() and resume refuse a run directory whose two checkpoint files disagree, naming both; deleting model.safetensors as told resumes", async () => {
  const dir = await makeTempDir();
  try {
    // A 4-step run that stopped after its step-2 checkpoint, the same run uninterrupted, and a
    // run of another seed to step 2.
    const opts: TrainOptions = { ...base, steps: 4 };
    await assert.rejects(
      train({ ...opts, out: `${dir}/run`, writeFault: { step: 4 } }),
      CheckpointError,
    );
    const later = await train({ ...opts, out: `${dir}/later` });
    await assert.rejects(
      train({ ...opts, seed: 9, out: `${dir}/other`, writeFault: { step: 4 } }),
      CheckpointError,
    );
    const run = `${dir}/run`, model = `${run}/model.safetensors`;
    const optimizer = `${run}/optimizer.safetensors`;
    const refused = (got: string) => (e: unknown) => {
      assert.ok(e instanceof RangeError, String(e));
      assert.equal(
        e.message,
        `Inconsistent run directory: expected ${model} and ${optimizer} to be one checkpoint, ` +
          `got ${got}; delete ${model} to resume from step 2, which ${optimizer} holds whole`,
      );
      return true;
    };
    // model.safetensors two steps ahead: a checkpoint cut off between its renames.
    await fs.copyFile(`${dir}/later/model.safetensors`, model);
    const cut = "step 4 and step 2 (a checkpoint cut off between its two renames)";
    await assert.rejects(loadRun(run), refused(cut));
    await assert.rejects(train({ ...opts, out: run, resume: true }), refused(cut));
    // The same step, but another run's weights.
    await fs.copyFile(`${dir}/other/model.safetensors`, model);
    await assert.rejects(
      loadRun(run),
      refused("other weights at the same step 2 (files of two runs?)"),
    );
    // The remedy the message gives: resuming retraces steps 3 and 4 to the same weights.
    await fs.rm(model);
    assert.equal((await loadRun(run)).step, 2);
    const resumed = await train({ ...opts, out: run, resume: true });
    assert.deepEqual(resumed.model.params, later.model.params);
    assert.equal((await loadCheckpoint(run)).step, 4);
  } finally {
    await removeDir(dir);
  }
});
