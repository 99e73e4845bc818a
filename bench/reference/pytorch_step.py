"""PyTorch reference for bench/throughput.ts: the same model, the same kind of training step.

Run with Debian's PyTorch (`apt-get install python3-torch libopenblas0-pthread`; torch 1.13):

    /usr/bin/python3 bench/reference/pytorch_step.py --preset small --batch 16 --context 128 --threads 2
    /usr/bin/python3 bench/reference/pytorch_step.py --preset seed --batch 2 --context 8 --threads 1 --json

The module tree is src/model/layout.ts's, imported from tests/fixtures/make_fixtures.py (the
classes the golden fixtures are made with, so the shapes and names cannot drift):
`nn.TransformerEncoder` of `nn.TransformerEncoderLayer`s for learned positions, the same names
with RoPE on q and k for rotary. One training step, as bench/throughput.ts times it:

    draw a batch (random ids, t per sequence, mask) -> forward -> loss -> backward
    -> clip_grad_norm_(1.0) -> AdamW (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01)

Losses: `seed` (the notebook's: cross-entropy at masked positions, sum(ce * mask) /
(mask.sum() + 1e-6), t ~ U(0, 1), mask with probability t) or `elbo` (MDLM under the loglinear
schedule: t ~ U[1e-3, 1], mask with probability (1 - 1e-3) t, MASK logit -inf, masked CE times
sigma'(t) / expm1(sigma(t)), averaged per token).

Presets (vocabulary 512 for `small`, 37 for `seed` unless --vocab says otherwise):

    small  V 512, T 128, d 128, 4 layers, 4 heads, dFF 512, rotary, pre-norm, GELU, dropout 0
    seed   V 37, T 8, d 4, 2 layers, 2 heads, dFF 2048, learned, post-norm, ReLU, dropout 0.1

`--threads n` sets both torch's intra-op threads (`torch.set_num_threads`) and OpenBLAS's
(`OPENBLAS_NUM_THREADS` before torch loads, and `openblas_set_num_threads` when the library
exports it): Debian's torch calls the system BLAS, whose pthread pool is otherwise sized to the
machine whatever torch is told. `workers` in the JSON is n.

`msPerStep` is the median over the timed steps after untimed warm-up steps; `peakRssMB` is
`ru_maxrss` of this process. The last line printed is one JSON object:

    {"preset","batch","context","workers","msPerStep","tokensPerSecond","peakRssMB"}

Note on OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: where the machine sets them (older OpenBLAS builds
misdetect some processors), they pin the kernel OpenBLAS runs. This script leaves the environment
as it finds it and prints the kernel in use (`openblas_get_corename`) in its non-JSON output;
bench/compare.ts decides whether to unset them for the run.
"""

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import resource
import statistics
import sys
import time

PRESETS = {
    "small": {"vocabSize": 512, "context": 128, "dModel": 128, "nHeads": 4, "nLayers": 4,
              "dFF": 512, "positions": "rotary", "normFirst": True, "activation": "gelu",
              "dropout": 0.0},
    "seed": {"vocabSize": 37, "context": 8, "dModel": 4, "nHeads": 2, "nLayers": 2,
             "dFF": 2048, "positions": "learned", "normFirst": False, "activation": "relu",
             "dropout": 0.1},
}

TIME_EPS = 1e-3  # t ~ U[eps, 1] for the elbo loss, as src/train/batch.ts


def parse_args(argv):
    p = argparse.ArgumentParser(description="PyTorch training-step throughput (JSON last line).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=None, help="default: the preset's T")
    p.add_argument("--vocab", type=int, default=None, help="default: the preset's V")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--loss", choices=["seed", "elbo"], default="seed")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    a = p.parse_args(argv)
    for name in ("batch", "steps", "threads"):
        if getattr(a, name) < 1:
            p.error(f"--{name}: expected an integer >= 1, got {getattr(a, name)}")
    if a.warmup < 0:
        p.error(f"--warmup: expected an integer >= 0, got {a.warmup}")
    return a


def openblas():
    """The OpenBLAS that torch calls (Debian: libblas.so.3 -> openblas-pthread), or None."""
    for name in ("libblas.so.3", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib
        except (OSError, AttributeError):
            continue
    return None


def main(argv):
    a = parse_args(argv)
    # Before torch loads the BLAS, so its thread pool starts at the right size.
    os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)

    import torch
    import torch.nn.functional as F

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "tests", "fixtures"))
    from make_fixtures import DiffusionTransformer  # no side effects: main() is guarded

    torch.set_num_threads(a.threads)
    blas = openblas()
    if blas is not None:
        try:
            blas.openblas_set_num_threads(a.threads)
        except AttributeError:
            pass
    core = blas.openblas_get_corename().decode() if blas is not None else "unknown"

    c = dict(PRESETS[a.preset])
    if a.context is not None:
        c["context"] = a.context
    if a.vocab is not None:
        c["vocabSize"] = a.vocab
    V, T, B = c["vocabSize"], c["context"], a.batch
    mask_id = V - 1

    torch.manual_seed(1)
    model = DiffusionTransformer(c, dropout=c["dropout"])
    model.train()  # dropout active where the preset has it, as the trainer's steps
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01)
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)

    def step():
        x0 = torch.randint(0, V - 1, (B, T))  # real tokens only; the cost does not depend on them
        if a.loss == "seed":
            t = torch.rand(B, 1)
            mask = torch.rand(B, T) < t  # torch.bernoulli(t), as the notebook
            xt = x0.masked_fill(mask, mask_id)
            ce = F.cross_entropy(model(xt).permute(0, 2, 1), x0, reduction="none")
            maskf = mask.float()
            loss = (ce * maskf).sum() / (maskf.sum() + 1e-6)
        else:
            t = TIME_EPS + (1 - TIME_EPS) * torch.rand(B, 1)
            sigma = -torch.log1p(-(1 - TIME_EPS) * t)
            dsigma = (1 - TIME_EPS) / (1 - (1 - TIME_EPS) * t)
            mask = torch.rand(B, T) < (1 - TIME_EPS) * t  # = 1 - exp(-sigma)
            xt = x0.masked_fill(mask, mask_id)
            logits = model(xt)
            logits[..., mask_id] = -math.inf  # SUBS: never predict MASK
            ce = F.cross_entropy(logits.permute(0, 2, 1), x0, reduction="none")
            w = mask.float() * (dsigma / torch.expm1(sigma))
            loss = (ce * w).sum() / (B * T)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    times = []
    loss = float("nan")
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        if s >= a.warmup:
            times.append(dt * 1000)
    ms = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = {
        "preset": a.preset, "batch": B, "context": T, "workers": a.threads,
        "msPerStep": round(ms, 2), "tokensPerSecond": round(B * T / (ms / 1000)),
        "peakRssMB": round(peak, 1),
    }
    if not a.json:
        env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
        print(f"torch {torch.__version__}, {n_params:,} parameters (V {V}), OpenBLAS kernel {core}, "
              f"env {env or 'no OPENBLAS_CORETYPE/L2_SIZE'}, threads {a.threads}, loss {a.loss}")
        print(f"{a.preset} B={B} T={T} threads={a.threads}: {result['msPerStep']} ms/step "
              f"(median of {a.steps}, min {min(times):.2f}), "
              f"{result['tokensPerSecond']:,} tokens/s, peak RSS {result['peakRssMB']} MB, "
              f"last loss {loss:.4f}")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
