#!/usr/bin/env python3
"""Converts a DiT checkpoint trained with SEDD's or MDLM's PyTorch code into a directory that
`deno task sample --checkpoint <dir>`, `deno task eval --checkpoint <dir>` and the browser page
load. Not part of the library: a stand-alone script that needs only PyTorch (and PyYAML for a
Hydra `config.yaml`).

    python3 tools/convert_checkpoint.py SOURCE OUT_DIR --tokenizer tokenizer.json
    python3 tools/convert_checkpoint.py SOURCE OUT_DIR --vocab vocab.json --merges merges.txt

SOURCE is one of (the kind is read from the file's contents; --source forces it):

  sedd  A SEDD run's `checkpoints-meta/checkpoint.pth` or `checkpoints/checkpoint_N.pth`:
        {'model': state dict, 'ema': {'decay', 'num_updates', 'shadow_params'}, 'optimizer',
        'step'}. The EMA weights are taken (`shadow_params` is the model's parameters in
        registration order, which is the state dict's order without the `rotary_emb.inv_freq`
        buffer); --no-ema takes 'model' instead. A 'module.' prefix (a DDP wrapper) is dropped.
        Config: the run's `.hydra/config.yaml` (found beside the run directory, or --config).
  hub   A Hugging Face Hub `pytorch_model.bin` of SEDD (louaaron/sedd-small, sedd-medium): the
        plain state dict, with the `config.json` beside it (or --config) holding SEDD's config.
  mdlm  An MDLM Lightning checkpoint (`.ckpt`): 'state_dict' with the network under
        'backbone.*', and 'ema' whose `shadow_params` are the backbone's parameters followed by
        the noise schedule's. Config: the checkpoint's 'hyper_parameters' when they unpickle to a
        plain mapping, else the run's `.hydra/config.yaml` via --config.

OUT_DIR receives:

  model.safetensors  the DiT's state dict under SEDD's names, float32, or float16/bfloat16 with
                     --dtype f16|bf16 (rotary_emb.inv_freq stays float32) (a plain state dict:
                     `load_state_dict(strict=True)` of SEDD's or MDLM's module takes it back).
  config.json        format "sedd-core/converted-dit/1"; kind "dit"; nHeads; context;
                     vocabSize, dModel, nLayers, condDim; output "sedd" (SEDD: log-scores, with
                     scaleBySigma) or "logits" (MDLM's SUBS); graph "absorb" | "uniform";
                     timeConditioning (MDLM's time_conditioning; SEDD always reads sigma);
                     noise {type "loglinear", eps} or {type "geometric", sigmaMin, sigmaMax} as
                     SEDD's noise_lib / MDLM's noise_schedule build them; the tokenizer's file
                     names; the source, step and whether EMA weights were taken.
  tokenizer.json     copied from --tokenizer (or vocab.json + merges.txt from --vocab/--merges);
                     there is no network here, so give GPT-2's files from a local copy.

SEDD's uniform graph has no mask token (V = the tokenizer's 50257); this library always keeps
the mask as the last id, so the converter appends one row to `vocab_embed.embedding` and to
`output_layer.linear` (zeros; the uniform graph never reads that column) and records
"maskPadded": true.

Options: --n-heads, --context, --time-conditioning/--no-time-conditioning override the config;
--source sedd|hub|mdlm; --no-ema; --dtype f32|f16|bf16; --config PATH. Run with --help for the list.
"""

import argparse
import json
import os
import shutil
import struct
import sys
import types

import torch

FORMAT = "sedd-core/converted-dit/1"


# --- reading -------------------------------------------------------------------------------

class _Opaque:
    """Stands in for a class whose module is not importable here (Lightning, transformers,
    omegaconf): the weights do not need it, so it unpickles into an inert object."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state


class _StubModule(types.ModuleType):
    """A module that is not installed: every attribute is a fresh _Opaque subclass."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Opaque,), {"__module__": self.__name__})
        setattr(self, name, cls)
        return cls


def load_file(path):
    """torch.load on the CPU, tolerating pickled objects of packages that are not installed (a
    Lightning checkpoint's callbacks and hyper-parameters): each missing module is stubbed for
    the duration of the load, and its objects come back inert."""
    stubbed = []
    try:
        for _ in range(100):
            try:
                return torch.load(path, map_location="cpu")
            except ModuleNotFoundError as e:
                if not e.name or e.name in sys.modules:
                    raise
                sys.modules[e.name] = _StubModule(e.name)
                stubbed.append(e.name)
        fail(f"{path}: too many modules missing to unpickle it")
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)


def fail(msg):
    sys.exit("error: " + msg)


def plain(obj):
    """A config as nested dicts: a dict as it is, an OmegaConf object through to_container;
    None for anything else (an object that did not unpickle)."""
    if isinstance(obj, dict):
        return obj
    try:
        from omegaconf import OmegaConf  # only when the checkpoint pickled an OmegaConf object
        if OmegaConf.is_config(obj):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:
        pass
    return None


def read_config_file(path):
    if not os.path.isfile(path):
        fail(f"config not found: expected a config.yaml or config.json file, got {path!r}")
    with open(path) as f:
        if path.endswith(".json"):
            return json.load(f)
        import yaml
        return yaml.safe_load(f)


def detect(obj):
    if not isinstance(obj, dict):
        fail(f"unrecognised checkpoint: expected a dict, got {type(obj).__name__}")
    if "state_dict" in obj:
        return "mdlm"
    if "model" in obj and isinstance(obj["model"], dict) or "ema" in obj:
        return "sedd"
    if "vocab_embed.embedding" in obj or "module.vocab_embed.embedding" in obj:
        return "hub"
    fail("unrecognised checkpoint: expected SEDD's {'model', 'ema', ...}, MDLM's {'state_dict', "
         "'ema', ...} or a state dict with 'vocab_embed.embedding', got keys "
         f"{sorted(map(str, obj))[:8]}")


def strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def dit_parameter_names(n_blocks):
    """The DiT's trainable parameters in registration order (what model.parameters() yields)."""
    names = ["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
             "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias"]
    for i in range(n_blocks):
        for s in ["norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight",
                  "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
                  "adaLN_modulation.weight", "adaLN_modulation.bias"]:
            names.append(f"blocks.{i}.{s}")
    return names + ["output_layer.norm_final.weight", "output_layer.linear.weight",
                    "output_layer.linear.bias", "output_layer.adaLN_modulation.weight",
                    "output_layer.adaLN_modulation.bias"]


def n_blocks_of(state):
    idx = {int(k.split(".")[1]) for k in state if k.startswith("blocks.")}
    return max(idx) + 1 if idx else 0


def apply_ema(state, ema, what):
    """Replaces the parameters of `state` by the EMA's shadow_params, zipped in parameter order.
    Shadow params past the DiT's (MDLM's noise schedule, if it has any) are ignored."""
    if not isinstance(ema, dict) or "shadow_params" not in ema:
        fail(f"{what}: expected 'ema' with 'shadow_params', got {type(ema).__name__}"
             " (pass --no-ema to take the raw weights)")
    shadow = list(ema["shadow_params"])
    names = dit_parameter_names(n_blocks_of(state))
    if len(shadow) < len(names):
        fail(f"{what}: expected at least {len(names)} EMA shadow_params (one per DiT "
             f"parameter), got {len(shadow)}")
    out = dict(state)
    for name, p in zip(names, shadow):
        if name not in state:
            fail(f"{what}: the state dict lacks {name!r}")
        if tuple(p.shape) != tuple(state[name].shape):
            fail(f"{what}: EMA tensor for {name!r} has shape {list(p.shape)}, expected "
                 f"{list(state[name].shape)} (shadow_params out of parameter order?)")
        out[name] = p
    return out


def from_sedd(obj, path, args):
    model = obj.get("model")
    if not isinstance(model, dict):
        fail(f"{path}: expected a 'model' state dict in a SEDD checkpoint, got none")
    if any(k.startswith("module.") for k in model):
        model = strip(model, "module.")
    state = model if args.no_ema else apply_ema(model, obj.get("ema"), path)
    cfg_path = args.config
    if cfg_path is None:  # <run>/checkpoints-meta/checkpoint.pth -> <run>/.hydra/config.yaml
        run = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        cfg_path = os.path.join(run, ".hydra", "config.yaml")
    return state, read_config_file(cfg_path), obj.get("step")


def from_hub(obj, path, args):
    state = strip(obj, "module.") if "module.vocab_embed.embedding" in obj else obj
    cfg_path = args.config or os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    cfg = read_config_file(cfg_path)
    if isinstance(cfg, dict) and "model" not in cfg and isinstance(cfg.get("config"), dict):
        cfg = cfg["config"]  # some huggingface_hub versions nest the init argument
    return state, cfg, None


def from_mdlm(obj, path, args):
    if not isinstance(obj.get("state_dict"), dict):
        fail(f"{path}: expected a Lightning checkpoint with 'state_dict', got keys "
             f"{sorted(map(str, obj))[:8]}")
    state = strip(obj["state_dict"], "backbone.")
    if "vocab_embed.embedding" not in state:
        fail(f"{path}: expected 'backbone.vocab_embed.embedding' in 'state_dict' (MDLM's DiT "
             "backbone), got none")
    if not args.no_ema:
        state = apply_ema(state, obj.get("ema"), path)
    cfg = read_config_file(args.config) if args.config else None
    if cfg is None:
        cfg = plain((obj.get("hyper_parameters") or {}).get("config"))
    if cfg is None:
        fail(f"{path}: its hyper_parameters' config does not unpickle here (omegaconf not "
             "installed?): expected --config with the run's .hydra/config.yaml")
    return state, cfg, obj.get("global_step")


# --- the config ----------------------------------------------------------------------------

def get(cfg, *keys, default=None):
    for k in keys:
        if not isinstance(cfg, dict) or k not in cfg:
            return default
        cfg = cfg[k]
    return cfg


def noise_of(cfg):
    kind = get(cfg, "noise", "type", default="loglinear")
    if kind == "loglinear":  # SEDD's and MDLM's LogLinearNoise() take the default eps
        return {"type": "loglinear", "eps": 1e-3}
    if kind == "geometric":
        return {"type": "geometric", "sigmaMin": float(get(cfg, "noise", "sigma_min")),
                "sigmaMax": float(get(cfg, "noise", "sigma_max"))}
    fail(f"unsupported noise schedule: expected loglinear or geometric, got {kind!r}")


def convert(args):
    if not os.path.isfile(args.source):
        fail(f"checkpoint not found: expected a file, got {args.source!r}")
    obj = load_file(args.source)
    source = args.source_kind or detect(obj)
    state, cfg, step = {"sedd": from_sedd, "hub": from_hub, "mdlm": from_mdlm}[source](
        obj, args.source, args)
    state = {k: v for k, v in state.items() if torch.is_tensor(v)}

    embed = state.get("vocab_embed.embedding")
    if embed is None or embed.dim() != 2:
        fail("not a DiT: expected 'vocab_embed.embedding' [V, d]")
    V, d = embed.shape
    n_heads = args.n_heads or get(cfg, "model", "n_heads")
    if not n_heads:
        fail("nHeads unknown: expected model.n_heads in the config or --n-heads")
    n_heads = int(n_heads)
    if d % n_heads or (d // n_heads) % 2:
        fail(f"wrong nHeads: expected d/nHeads an even integer, got d {d}, nHeads {n_heads}")
    inv = state.get("rotary_emb.inv_freq")
    if inv is not None and inv.numel() != d // n_heads // 2:
        fail(f"wrong nHeads: rotary_emb.inv_freq has {inv.numel()} entries, nHeads {n_heads} "
             f"needs {d // n_heads // 2}")
    graph = get(cfg, "graph", "type", default="absorb")
    if source == "mdlm":
        graph = "absorb"  # MDLM's diffusion: absorbing_state
        param = get(cfg, "parameterization", default="subs")
        if param not in ("subs", "sedd"):
            fail(f"unsupported MDLM parameterization: expected subs or sedd, got {param!r}")
        output = "logits" if param == "subs" else "sedd"
        time_cond = bool(get(cfg, "time_conditioning", default=False))
        scale = bool(get(cfg, "model", "scale_by_sigma", default=True)) if output == "sedd" \
            else False
    else:
        output, time_cond = "sedd", True
        scale = bool(get(cfg, "model", "scale_by_sigma", default=True))
    if graph not in ("absorb", "uniform"):
        fail(f"unsupported graph: expected absorb or uniform, got {graph!r}")
    if args.time_conditioning is not None:
        time_cond = args.time_conditioning
    padded = False
    if graph == "uniform":  # no mask token in SEDD's uniform vocabulary: append one
        padded = True
        state["vocab_embed.embedding"] = torch.cat([embed, embed.new_zeros(1, d)])
        w = state["output_layer.linear.weight"]
        state["output_layer.linear.weight"] = torch.cat([w, w.new_zeros(1, d)])
        b = state["output_layer.linear.bias"]
        state["output_layer.linear.bias"] = torch.cat([b, b.new_zeros(1)])
        V += 1
    context = int(args.context or get(cfg, "model", "length", default=1024))
    config = {
        "format": FORMAT,
        "kind": "dit",
        "source": source,
        "nHeads": n_heads,
        "context": context,
        "vocabSize": int(V),
        "dModel": int(d),
        "nLayers": n_blocks_of(state),
        "condDim": int(state["sigma_map.mlp.0.weight"].shape[0]),
        "output": output,
        "scaleBySigma": scale,
        "graph": graph,
        "timeConditioning": time_cond,
        "noise": noise_of(cfg),
        "maskPadded": padded,
        "ema": not args.no_ema and source != "hub",
        "step": int(step) if isinstance(step, int) or torch.is_tensor(step) else None,
    }

    ntok = tokenizer_size(args)
    if ntok != V - 1:
        fail(f"tokenizer mismatch: expected {V - 1} tokens (the model's vocabulary without the "
             f"mask), got {ntok} in {args.tokenizer or args.vocab}")
    os.makedirs(args.out, exist_ok=True)
    if args.tokenizer:
        shutil.copyfile(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
        config["tokenizer"] = ["tokenizer.json"]
    else:
        shutil.copyfile(args.vocab, os.path.join(args.out, "vocab.json"))
        shutil.copyfile(args.merges, os.path.join(args.out, "merges.txt"))
        config["tokenizer"] = ["vocab.json", "merges.txt"]
    order = dit_parameter_names(config["nLayers"])
    order.insert(5, "rotary_emb.inv_freq")  # the buffer sits between sigma_map and the blocks
    missing = [n for n in order if n not in state and n != "rotary_emb.inv_freq"]
    if missing:
        fail(f"missing DiT tensors: expected {missing[:4]}, got none")
    extra = [n for n in state if n not in order]
    if extra:
        fail(f"unexpected tensors for a DiT: {extra[:4]}")
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      [(n, state[n]) for n in order if n in state], {"format": FORMAT},
                      DTYPES[args.dtype][0])
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return config


def tokenizer_size(args):
    """Ids in the tokenizer file: one past the largest of its vocabulary and added tokens."""
    try:
        with open(args.tokenizer or args.vocab, encoding="utf-8") as f:
            data = json.load(f)
        if args.tokenizer:
            ids = list(data["model"]["vocab"].values())
            ids += [t["id"] for t in data.get("added_tokens") or []]
        else:
            ids = list(data.values())
        return max(ids) + 1
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        fail(f"unreadable tokenizer {args.tokenizer or args.vocab}: expected GPT-2's "
             f"tokenizer.json or vocab.json, got {type(e).__name__}: {e}")


DTYPES = {"f32": ("F32", torch.float32, 4), "f16": ("F16", torch.float16, 2),
          "bf16": ("BF16", torch.bfloat16, 2)}


def tensor_bytes(t, dtype):
    """One tensor's raw little-endian data in `dtype` ("F32", "F16" or "BF16")."""
    _, torch_dtype, _ = next(v for v in DTYPES.values() if v[0] == dtype)
    t = t.detach().to(torch_dtype).contiguous()
    # numpy has no bfloat16: reinterpret the 16-bit patterns as int16 to take their bytes
    return (t.view(torch.int16) if torch_dtype == torch.bfloat16 else t).numpy().tobytes()


def write_safetensors(path, tensors, metadata, dtype="F32"):
    """The safetensors format by hand: an 8-byte little-endian header length, the JSON header
    (name -> dtype, shape, data_offsets; __metadata__), padded to 8 bytes, then the raw data.
    Tensors are written one at a time, each cast on its own to `dtype`, except the rotary
    buffer, which stays float32 (it is tiny, and the loader checks it against nHeads)."""
    header, offset, kinds = {"__metadata__": metadata}, 0, []
    for name, t in tensors:
        kind = "F32" if name == "rotary_emb.inv_freq" else dtype
        width = next(v[2] for v in DTYPES.values() if v[0] == kind)
        n = t.numel() * width
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        kinds.append(kind)
        offset += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for (_, t), kind in zip(tensors, kinds):
            f.write(tensor_bytes(t, kind))
    os.replace(path + ".tmp", path)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Convert a SEDD checkpoint.pth, a SEDD Hub pytorch_model.bin or an MDLM "
        ".ckpt into model.safetensors + config.json + the tokenizer.")
    p.add_argument("source", help="checkpoint.pth, pytorch_model.bin or .ckpt")
    p.add_argument("out", help="output directory")
    p.add_argument("--tokenizer", help="GPT-2's tokenizer.json to copy")
    p.add_argument("--vocab", help="vocab.json to copy (with --merges)")
    p.add_argument("--merges", help="merges.txt to copy (with --vocab)")
    p.add_argument("--config", help="the run's .hydra/config.yaml or the Hub's config.json")
    p.add_argument("--source", dest="source_kind", choices=["sedd", "hub", "mdlm"],
                   help="the checkpoint's kind (default: from its contents)")
    p.add_argument("--n-heads", type=int, help="attention heads (default: model.n_heads)")
    p.add_argument("--context", type=int, help="longest sequence (default: model.length)")
    p.add_argument("--no-ema", action="store_true", help="take the raw weights, not the EMA")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32",
                   help="weights' dtype in model.safetensors (default f32; f16/bf16 halve the "
                   "file, and load into float32 tensor by tensor)")
    tc = p.add_mutually_exclusive_group()
    tc.add_argument("--time-conditioning", dest="time_conditioning", action="store_true",
                    default=None, help="the network reads sigma (SEDD; MDLM's option)")
    tc.add_argument("--no-time-conditioning", dest="time_conditioning", action="store_false",
                    help="the network gets sigma 0 (MDLM's default)")
    args = p.parse_args(argv)
    if bool(args.tokenizer) == bool(args.vocab or args.merges) or \
            (not args.tokenizer and not (args.vocab and args.merges)):
        fail("tokenizer: expected --tokenizer tokenizer.json, or --vocab and --merges")
    for f in [args.tokenizer, args.vocab, args.merges]:
        if f and not os.path.isfile(f):
            fail(f"tokenizer file not found: {f!r}")
    config = convert(args)
    print(f"wrote {args.out}: {config['source']} DiT, V {config['vocabSize']}, d "
          f"{config['dModel']}, {config['nLayers']} blocks, {config['nHeads']} heads, output "
          f"{config['output']}, graph {config['graph']}, noise {config['noise']['type']}")


if __name__ == "__main__":
    main()
