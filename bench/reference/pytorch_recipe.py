"""PyTorch mirror of bench/recipe.ts: the same recipe, trained and evaluated in PyTorch.

It reads the token dump that `deno task recipe ... --dump-tokens FILE` writes, builds the same
model, trains it with the same recipe and prints held-out bits/char at the same points, in the
same format, with a final JSON line of the same shape. Run with Debian's PyTorch
(`apt-get install python3-torch`; torch 1.13 here):

    deno task recipe --steps 2000 --dump-tokens runs/moby.tokens.json      # once per tokenizer
    /usr/bin/python3 bench/reference/pytorch_recipe.py runs/moby.tokens.json --steps 2000
    # quick check (a few seconds):
    deno task recipe --data README.md --preset tiny --vocab 300 --steps 20 --dump-tokens /tmp/t.json
    /usr/bin/python3 bench/reference/pytorch_recipe.py /tmp/t.json --preset tiny --steps 20 \\
        --points 2 --eval-samples 2

Flags: the harness's, with its defaults (the main job's recipe, src/train/defaults.ts: small
preset, context 128, batch 16, lr 2e-3, the seed loss with antithetic masking rates), so the command line that made a curve in TypeScript makes it
here. The tokens, the train/held-out boundary and the held-out character count come from the
dump; `--vocab` must equal the dump's. `--workers` and `--micro-batch` are accepted and ignored;
`--threads` (default 1) sets torch's intra-op threads and OpenBLAS's. The dump records the
harness's resolved recipe; when this one differs, a note on stderr names the fields.

The model is tests/fixtures/make_fixtures.py's module tree (imported, so the state-dict names are
ours and our checkpoints load with strict=True; `--init model.safetensors` starts from one of
ours): `nn.TransformerEncoderLayer`s for learned positions, `RotaryEncoderLayer`s for rotary ones
(with dropout added here, where nn.TransformerEncoderLayer puts it: attention weights, after
out_proj, after the activation, after linear2), the adaLN-Zero model for --time-conditioning.
Initialisation is PyTorch's own (our init draws the same distributions, from another generator).

One training step (src/train/batch.ts, src/diffusion/losses.ts, src/train/train.ts):

    B windows of T tokens, starts uniform over the training split
    seed: t ~ U[0, 1) per sequence (antithetic: t_j = ((u + j) / B) mod 1), mask with probability t, cross-entropy over all V logits at
          masked positions, sum / (masked count + 1e-6)                      (the notebook)
    elbo: t = eps + (1 - eps) u, eps 1e-3, u ~ U[0, 1) per sequence or antithetic
          u_j = ((u + j) / B) mod 1; sigma = -log1p(-(1 - eps) t),
          dsigma = (1 - eps) / (1 - (1 - eps) t);
          mask with probability 1 - exp(-sigma); SUBS (MASK logit -inf: softmax over the V - 1
          real tokens); masked CE times dsigma / expm1(sigma), summed and divided by B T  (MDLM)
    clip_grad_norm_(clip) (0: off), AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight decay)
    lr: linear warm-up over `warmup` steps, lr (s + 1) / warmup, then constant or cosine to
        min-lr over (s - warmup) / (steps - warmup), or over the training time for --minutes

Evaluation, a port of src/eval/elbo.ts's evaluate(): the held-out split cut into consecutive
windows of `context` tokens (the last one shorter); K = --eval-samples draws per window with
t = eps + (1 - eps) u, u ~ U[0, 1), each token masked with probability 1 - exp(-sigma(t)); the
window's summed nats dsigma / expm1(sigma) * sum_masked -log softmax_{V-1}(logits)[x0], in eval
mode; total nats = sum over windows of the mean over draws; standard error from the draws'
sample variance / K summed over windows; bits/char = total / ln 2 / held-out characters. The
draws come from a torch generator seeded with 0, not from our generator, so the two estimates
of one model agree within their standard errors, not bitwise.

Evaluation time is excluded from the training seconds and from a --minutes budget, as in the
harness. Ctrl+C stops training after the current step and evaluates the model (Ctrl+C again
quits at once).
"""

import argparse
import json
import math
import os
import signal
import sys
import time

PRESETS = {  # src/model/config.ts
    "seed": {"context": 8, "dModel": 4, "nHeads": 2, "nLayers": 2, "dFF": 2048,
             "positions": "learned", "normFirst": False, "activation": "relu", "dropout": 0.1},
    "tiny": {"context": 16, "dModel": 16, "nHeads": 2, "nLayers": 2, "dFF": 32,
             "positions": "rotary", "normFirst": True, "activation": "gelu", "dropout": 0},
    "small": {"context": 128, "dModel": 128, "nHeads": 4, "nLayers": 4, "dFF": 512,
              "positions": "rotary", "normFirst": True, "activation": "gelu", "dropout": 0},
}
TIME_EPS = 1e-3  # src/train/batch.ts TIME_EPS and evaluate()'s eps
DUMP_FORMAT = "sedd-recipe-tokens/1"


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        sys.stderr.write(f"{message} (see --help)\n")
        sys.exit(2)


def parse_args(argv):
    p = Parser(description="PyTorch mirror of bench/recipe.ts (JSON last line).")
    p.add_argument("dump", help="token dump from `deno task recipe --dump-tokens FILE`")
    p.add_argument("--steps", type=str)
    p.add_argument("--tokens", type=str)
    p.add_argument("--minutes", type=str)
    p.add_argument("--points", type=str, default="5")
    p.add_argument("--eval-samples", type=str, default="8")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small")
    p.add_argument("--d-model", type=str)
    p.add_argument("--layers", type=str)
    p.add_argument("--heads", type=str)
    p.add_argument("--dff", type=str)
    p.add_argument("--positions", choices=["learned", "rotary"])
    p.add_argument("--norm", choices=["pre", "post"])
    p.add_argument("--activation", choices=["relu", "gelu"])
    p.add_argument("--dropout", type=str)
    p.add_argument("--time-conditioning", action="store_true")
    p.add_argument("--vocab", type=str)
    p.add_argument("--loss", choices=["seed", "elbo"], default="seed")
    p.add_argument("--lr", type=str, default="2e-3")
    p.add_argument("--min-lr", type=str)
    p.add_argument("--warmup", type=str)
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--batch", type=str, default="16")
    p.add_argument("--context", type=str)
    p.add_argument("--weight-decay", type=str, default="0.01")
    p.add_argument("--clip", type=str, default="1")
    p.add_argument("--antithetic", action="store_true")
    p.add_argument("--no-antithetic", action="store_true")
    p.add_argument("--seed", type=str, default="0")
    p.add_argument("--workers", type=str, help="accepted for a shared command line; ignored")
    p.add_argument("--micro-batch", type=str, help="accepted for a shared command line; ignored")
    p.add_argument("--threads", type=str, default="1")
    p.add_argument("--init", help="start from this safetensors checkpoint of ours (strict load)")
    p.add_argument("--label")
    p.add_argument("--json", help="also append the final JSON line to this file")
    return p.parse_args(argv)


def as_int(name, v, lo):
    f = as_num(name, v, lambda x: x == int(x) and x >= lo, f"an integer >= {lo}")
    return None if f is None else int(f)


def as_num(name, v, ok, what):
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        f = float("nan")
    if not (math.isfinite(f) and ok(f)):
        raise UsageError(f'Invalid --{name}: expected {what}, got "{v}"')
    return f


def read_dump(path):
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"Invalid dump {path}: expected a JSON token dump, got {e}")
    if not isinstance(d, dict) or d.get("format") != DUMP_FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise UsageError(f'Invalid dump {path}: expected format "{DUMP_FORMAT}", got {got!r}')
    n = len(d["tokens"])
    if d["trainTokens"] + d["heldOutTokens"] != n:
        raise UsageError(
            f"Invalid dump {path}: expected trainTokens + heldOutTokens = {n} tokens, got "
            f"{d['trainTokens']} + {d['heldOutTokens']}")
    return d


def resolve(a, dump):
    """The recipe as bench/recipe.ts's parseRecipe resolves it (same defaults)."""
    preset = PRESETS[a.preset]
    if a.antithetic and a.no_antithetic:
        raise UsageError("Invalid flags: expected --antithetic or --no-antithetic, got both")
    budgets = [k for k in ("steps", "tokens", "minutes") if getattr(a, k) is not None]
    if len(budgets) != 1:
        got = " and ".join(f"--{b}" for b in budgets) if budgets else "none"
        raise UsageError(
            f"Invalid budget: expected exactly one of --steps, --tokens, --minutes, got {got}")
    batch = as_int("batch", a.batch, 1)
    context = as_int("context", a.context, 1) or min(128, preset["context"])
    steps = None
    if a.steps is not None:
        # 0 steps (only with --init): evaluate a checkpoint of ours with the ported estimator.
        steps = as_int("steps", a.steps, 0 if a.init else 1)
        budget = {"steps": steps}
    elif a.tokens is not None:
        tokens = as_int("tokens", a.tokens, 1)
        steps = math.ceil(tokens / (batch * context))
        budget = {"tokens": tokens, "steps": steps}
    else:
        budget = {"minutes": as_num("minutes", a.minutes, lambda x: x > 0, "a number > 0")}
    points = as_int("points", a.points, 1)
    if steps is not None and points > max(steps, 1):
        raise UsageError(
            f"Invalid --points: expected at most the {steps} steps of the budget, got {points}")
    lr = as_num("lr", a.lr, lambda x: x > 0, "a number > 0")
    min_lr = as_num("min-lr", a.min_lr, lambda x: 0 <= x <= lr, f"0 <= x <= lr ({lr})")
    if min_lr is None:
        min_lr = lr / 10
    warmup = as_int("warmup", a.warmup, 0)
    if warmup is None:
        warmup = min(100, steps // 10) if steps is not None else 20
    vocab = as_int("vocab", a.vocab, 258)
    if vocab is not None and vocab != dump["vocabSize"]:
        raise UsageError(
            f"Invalid --vocab: expected the dump's vocabulary {dump['vocabSize']}, got {vocab}")
    c = dict(preset)
    c["vocabSize"] = dump["vocabSize"]
    c["context"] = context
    for key, flag in (("dModel", "d_model"), ("nLayers", "layers"), ("nHeads", "heads"),
                      ("dFF", "dff")):
        v = as_int(flag.replace("_", "-"), getattr(a, flag), 1)
        if v is not None:
            c[key] = v
    if a.positions:
        c["positions"] = a.positions
    if a.norm:
        c["normFirst"] = a.norm == "pre"
    if a.activation:
        c["activation"] = a.activation
    dropout = as_num("dropout", a.dropout, lambda x: 0 <= x < 1, "0 <= p < 1")
    if dropout is not None:
        c["dropout"] = dropout
    if a.time_conditioning:
        c["timeConditioning"] = True
    if c["dModel"] % c["nHeads"] != 0:
        raise UsageError(
            f"Invalid config: expected dModel divisible by nHeads, got dModel {c['dModel']}, "
            f"nHeads {c['nHeads']}")
    if c["positions"] == "rotary" and (c["dModel"] // c["nHeads"]) % 2 != 0:
        raise UsageError(
            "Invalid config: rotary positions need an even head size, got "
            f"{c['dModel'] // c['nHeads']}")
    if c.get("timeConditioning") and not c["normFirst"]:
        raise UsageError("Invalid config: timeConditioning needs --norm pre, got post")
    if c.get("timeConditioning") and c["dropout"] > 0:
        raise UsageError(
            "Unsupported config: time conditioning with dropout is not mirrored, got dropout "
            f"{c['dropout']}")
    settings = {
        "data": dump["data"], "vocab": dump["vocabSize"], "budget": budget, "points": points,
        "evalSamples": as_int("eval-samples", a.eval_samples, 1), "loss": a.loss,
        "graph": "absorb", "lr": lr, "minLr": min_lr, "warmup": warmup, "schedule": a.schedule,
        "batch": batch, "context": context,
        "weightDecay": as_num("weight-decay", a.weight_decay, lambda x: x >= 0, "a number >= 0"),
        "clip": as_num("clip", a.clip, lambda x: x >= 0, "a number >= 0"),
        "antithetic": not a.no_antithetic, "threads": as_int("threads", a.threads, 1),
        "seed": as_int("seed", a.seed, 0), "heldOutFraction": dump["heldOutFraction"],
    }
    return a.label or a.preset, c, settings


def differences(c, s, dump):
    """Fields of this recipe that differ from the harness's recipe recorded in the dump."""
    rec = dump.get("recipe") or {}
    out = [f"config.{k}" for k in sorted(set(c) | set(rec.get("config", {})))
           if c.get(k) != rec.get("config", {}).get(k)]
    theirs = rec.get("settings", {})
    for k in sorted(s):
        if k in ("data", "threads") or k not in theirs:
            continue
        if s[k] != theirs[k] and not (isinstance(s[k], float) and math.isclose(s[k], theirs[k])):
            out.append(k)
    return out


def build_model(c, torch, nn, F, fixtures):
    """make_fixtures' module tree; rotary layers get nn.TransformerEncoderLayer's dropout here."""
    p = c["dropout"]
    if c.get("timeConditioning"):
        return fixtures.TimeConditionedTransformer(c)
    if c["positions"] == "learned":
        return fixtures.DiffusionTransformer(c, dropout=p)
    model = fixtures.DiffusionTransformer(c)  # the rotary tree, dropout 0
    if p == 0:
        return model

    class DropoutRotarySelfAttention(fixtures.RotarySelfAttention):
        def forward(self, x):
            B, T, d = x.shape
            NH = self.nhead
            HS = d // NH
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(d, dim=-1)
            q, k, v = (z.view(B, T, NH, HS).transpose(1, 2) for z in (q, k, v))
            q = fixtures.rope(q, self.identity_rotation)
            k = fixtures.rope(k, self.identity_rotation)
            att = ((q @ k.transpose(-2, -1)) / math.sqrt(HS)).softmax(dim=-1)
            att = F.dropout(att, p, self.training)  # on the attention weights, as MHA
            return self.out_proj((att @ v).transpose(1, 2).reshape(B, T, d))

    class DropoutRotaryEncoderLayer(fixtures.RotaryEncoderLayer):
        def __init__(self, *args):
            super().__init__(*args)
            d = args[0]
            self.self_attn = DropoutRotarySelfAttention(d, args[1])
            self.dropout = nn.Dropout(p)
            self.dropout1 = nn.Dropout(p)
            self.dropout2 = nn.Dropout(p)

        def _ff(self, x):
            return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

        def forward(self, x):
            if self.norm_first:
                x = x + self.dropout1(self.self_attn(self.norm1(x)))
                return x + self._ff(self.norm2(x))
            x = self.norm1(x + self.dropout1(self.self_attn(x)))
            return self.norm2(x + self._ff(x))

    args = (c["dModel"], c["nHeads"], c["dFF"], c["activation"], c["normFirst"])
    for i, old in enumerate(model.transformer.layers):
        layer = DropoutRotaryEncoderLayer(*args)
        layer.load_state_dict(old.state_dict(), strict=True)  # nn.Dropout adds no parameters
        model.transformer.layers[i] = layer
    return model


def load_init(model, path, c, torch, fixtures):
    tensors, metadata = fixtures.read_safetensors(path)
    if "config" in metadata:
        theirs = json.loads(metadata["config"])
        keys = ("vocabSize", "dModel", "nHeads", "nLayers", "dFF", "positions", "normFirst",
                "activation")
        bad = [k for k in keys if theirs.get(k) != c.get(k)]
        if bool(theirs.get("timeConditioning")) != bool(c.get("timeConditioning")):
            bad.append("timeConditioning")
        if bad:
            raise UsageError(
                f"Invalid --init {path}: expected the recipe's model, got a checkpoint with "
                + ", ".join(f"{k} {theirs.get(k)} (recipe {c.get(k)})" for k in bad))
    state = {k: torch.from_numpy(v.astype("float32")) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)


def learning_rate(s, lr, warmup, schedule, min_lr, progress):
    """src/train/train.ts learningRate."""
    if s < warmup:
        return lr * (s + 1) / warmup
    if schedule == "constant":
        return lr
    p = min(1.0, max(0.0, progress))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))


def main(argv):
    a = parse_args(argv)
    try:
        threads = as_int("threads", a.threads, 1)
        dump = read_dump(a.dump)
        label, c, s = resolve(a, dump)
    except UsageError as e:
        sys.stderr.write(f"{e} (see --help)\n")
        return 2
    # Before torch loads the BLAS, so its thread pool starts at the right size.
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "tests", "fixtures"))
    import make_fixtures as fixtures  # no side effects: its main() is guarded

    torch.set_num_threads(threads)
    V, T, B = c["vocabSize"], s["context"], s["batch"]
    M = V - 1  # the mask id
    tc = bool(c.get("timeConditioning"))
    tokens = torch.tensor(dump["tokens"], dtype=torch.long)
    n_train = dump["trainTokens"]
    train_tokens = tokens[:n_train]
    held = tokens[n_train:]
    chars = dump["heldOutCharacters"]
    if n_train < T:
        sys.stderr.write(f"Not enough data: expected at least {T} training tokens, got {n_train}\n")
        return 2

    torch.manual_seed(s["seed"])  # initialisation and dropout
    model = build_model(c, torch, nn, F, fixtures)
    if a.init:
        try:
            load_init(model, a.init, c, torch, fixtures)
        except (UsageError, OSError) as e:
            sys.stderr.write(f"{e}\n")
            return 2
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=s["weightDecay"])
    gen = torch.Generator().manual_seed(s["seed"])  # windows and noise
    offsets = torch.arange(T)

    print(f"# {label}  params {n_params}  config {json.dumps(c, separators=(',', ':'))}  "
          f"settings {json.dumps(s, separators=(',', ':'))}", flush=True)
    diff = differences(c, s, dump)
    if diff:
        sys.stderr.write(f"note: differs from the dump's recipe in {', '.join(diff)}\n")
    sys.stderr.write(f"torch {torch.__version__}, {threads} thread(s); {len(tokens)} tokens: "
                     f"training on {n_train}, evaluating {len(held)} held-out tokens\n")

    def noise(x0):
        """xt, per-sequence sigma (float64), the loss of the batch."""
        if s["loss"] == "seed":
            if s["antithetic"]:  # masking rates spread evenly over the batch
                u0 = torch.rand(1, generator=gen, dtype=torch.float64)
                t = (((u0 + torch.arange(B, dtype=torch.float64)) / B) % 1)[:, None]
            else:
                t = torch.rand(B, 1, generator=gen, dtype=torch.float64)
            mask = torch.rand(B, T, generator=gen, dtype=torch.float64) < t
            xt = x0.masked_fill(mask, M)
            sigma = -torch.log1p(-t[:, 0])
            logits = model(xt, sigma.float()) if tc else model(xt)
            ce = F.cross_entropy(logits.permute(0, 2, 1), x0, reduction="none")
            maskf = mask.float()
            return (ce * maskf).sum() / (maskf.sum() + 1e-6)
        if s["antithetic"]:
            u0 = torch.rand(1, generator=gen, dtype=torch.float64)
            u = ((u0 + torch.arange(B, dtype=torch.float64)) / B) % 1
        else:
            u = torch.rand(B, generator=gen, dtype=torch.float64)
        t = TIME_EPS + (1 - TIME_EPS) * u
        sigma = -torch.log1p(-(1 - TIME_EPS) * t)
        dsigma = (1 - TIME_EPS) / (1 - (1 - TIME_EPS) * t)
        mask = torch.rand(B, T, generator=gen, dtype=torch.float64) < -torch.expm1(-sigma)[:, None]
        xt = x0.masked_fill(mask, M)
        logits = model(xt, sigma.float()) if tc else model(xt)
        ce = F.cross_entropy(logits[..., :M].permute(0, 2, 1), x0, reduction="none")  # SUBS
        w = (dsigma / torch.expm1(sigma)).float()[:, None]
        return (ce * mask.float() * w).sum() / (B * T)

    def evaluate():
        """src/eval/elbo.ts evaluate(): elbo bound, K draws per window, not antithetic."""
        K = s["evalSamples"]
        egen = torch.Generator().manual_seed(0)
        N = len(held)
        W = math.ceil(N / T)
        values = torch.zeros(W, K, dtype=torch.float64)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            full = N // T
            groups = [(0, full, T)] if full > 0 else []
            if full < W:
                groups.append((full, W, N - full * T))
            for w0, w1, ln in groups:
                x = torch.stack([held[w * T:w * T + ln] for w in range(w0, w1)])  # (nw, ln)
                items = x.repeat_interleave(K, dim=0)  # window-major, draws inner
                for first in range(0, items.shape[0], 64):
                    x0 = items[first:first + 64]
                    n = x0.shape[0]
                    u = torch.rand(n, generator=egen, dtype=torch.float64)
                    t = TIME_EPS + (1 - TIME_EPS) * u
                    sigma = -torch.log1p(-(1 - TIME_EPS) * t)
                    dsigma = (1 - TIME_EPS) / (1 - (1 - TIME_EPS) * t)
                    mask = torch.rand(n, ln, generator=egen, dtype=torch.float64) < \
                        -torch.expm1(-sigma)[:, None]
                    xt = x0.masked_fill(mask, M)
                    logits = model(xt, sigma.float()) if tc else model(xt)
                    logp = torch.log_softmax(logits[..., :M].double(), dim=-1)
                    ce = -logp.gather(-1, x0[..., None])[..., 0]
                    v = dsigma / torch.expm1(sigma) * (ce * mask).sum(-1)
                    idx = torch.arange(first, first + n)
                    values[w0 + idx // K, idx % K] = v
        model.train(was_training)
        total = values.mean(1).sum().item()
        var = (values.var(1, unbiased=True) / K).sum().item() if K >= 2 else float("nan")
        return {
            "natsPerToken": total / N, "natsPerTokenSe": math.sqrt(var) / N,
            "bitsPerChar": total / math.log(2) / chars, "se": math.sqrt(var) / math.log(2) / chars,
            "perplexity": math.exp(total / N), "heldOutTokens": N, "heldOutCharacters": chars,
        }

    points = []
    eval_seconds = 0.0
    last = {}

    def point(step, seconds):
        nonlocal eval_seconds
        e0 = time.perf_counter()
        r = evaluate()
        took = time.perf_counter() - e0
        eval_seconds += took
        last.clear()
        last.update(r)
        p = {"step": step, "tokens": step * B * T, "seconds": round(seconds, 3),
             "bitsPerChar": r["bitsPerChar"], "se": r["se"], "natsPerToken": r["natsPerToken"]}
        points.append(p)
        print(f"step {step}  tokens {p['tokens']}  train-seconds {seconds:.2f}  held-out bits/char "
              f"{p['bitsPerChar']:.4f} ± {p['se']:.4f}  nats/token {p['natsPerToken']:.4f}",
              flush=True)
        sys.stderr.write(f"  (evaluated in {took:.1f} s)\n")

    budget = s["budget"]
    steps = budget.get("steps")
    budget_s = budget["minutes"] * 60 if "minutes" in budget else math.inf
    npts = s["points"]
    # Math.round of the harness (half up; Python's round() would round half to even)
    targets = [math.floor((k + 1) * steps / npts + 0.5) if steps is not None
               else (k + 1) * budget_s / npts for k in range(npts - 1)]
    nxt = 0
    warmup = s["warmup"]
    model.train()
    trained = 0.0  # training seconds (evaluation excluded)
    step = 0
    stopped = "steps"
    last_progress = 0.0
    interrupted = []

    def on_sigint(signum, frame):
        sys.stderr.write("\nStopping after this step and evaluating (Ctrl+C again to quit)...\n")
        interrupted.append(True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)
    while steps is None or step < steps:
        if interrupted:
            stopped = "aborted"
            break
        if trained >= budget_s:
            stopped = "time"
            break
        t0 = time.perf_counter()
        progress = ((step - warmup) / max(1, steps - warmup) if steps is not None
                    else trained / budget_s)
        lr = learning_rate(step, s["lr"], warmup, s["schedule"], s["minLr"], progress)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, n_train - T + 1, (B,), generator=gen)
        x0 = train_tokens[starts[:, None] + offsets]
        loss = noise(x0)
        lv = loss.item()
        if not math.isfinite(lv):
            sys.stderr.write(f"Non-finite loss at step {step}: {lv}; training stopped\n")
            return 1
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if s["clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, s["clip"])
        opt.step()
        step += 1
        trained += time.perf_counter() - t0
        if trained - last_progress >= 30:
            last_progress = trained
            sys.stderr.write(f"step {step}  loss {lv:.4f}  lr {lr:.2e}  "
                             f"{round(B * T * step / trained)} tok/s  "
                             f"train-seconds {trained:.0f}\n")
        at = step if steps is not None else trained
        if nxt < len(targets) and at >= targets[nxt]:
            while nxt < len(targets) and at >= targets[nxt]:
                nxt += 1
            point(step, trained)
    if not points or points[-1]["step"] != step:
        point(step, trained)
    out = {
        "label": label, "config": c, "settings": s, "params": n_params, "steps": step,
        "tokens": step * B * T, "trainSeconds": round(trained, 3), "stopped": stopped,
        "workers": threads, "evalSeconds": round(eval_seconds, 3), "points": points,
        "final": {**points[-1], "natsPerTokenSe": last["natsPerTokenSe"],
                  "perplexity": last["perplexity"], "heldOutTokens": last["heldOutTokens"],
                  "heldOutCharacters": last["heldOutCharacters"]},
        "impl": f"pytorch {torch.__version__}",
    }
    line = json.dumps(out, separators=(",", ":"))
    print(line, flush=True)
    if a.json:
        with open(a.json, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
