"""Generate answers to prompts with a model, written with provenance in resumable shards.

  safepref generate --model smollm2-135m-instruct --prompts advbench:8 --preset paper-sample --out out/gen
  safepref generate --model path/to/ckpt --prompts my.csv --prompt-field question --preset paper-greedy \\
      --set max_new_tokens=64 --out out/greedy
  safepref generate --backend openai --model gpt-4o --prompts pku-paper:50 --preset paper-greedy --out out/gpt4o

Killing the command and rerunning it resumes: finished shards are kept, the rest is generated. A shard that no
longer matches its done-marker (deleted, truncated, edited) is generated again, with a warning.
"""

from __future__ import annotations

import argparse
import json

from safepref.config import finite_float
from safepref.generate import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hub id, local folder, or smollm2-135m-instruct")
    parser.add_argument("--prompts", required=True,
                        help="prompt source: a name (advbench:100, xstest-safe, pku-realign:50) or a file")
    parser.add_argument("--prompt-field", default="prompt", help="prompt column of a plain file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), help="settings preset")
    parser.add_argument("--config", default=None, help="YAML of generation settings (over the preset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one generation setting (repeatable), e.g. --set temperature=0.7")
    parser.add_argument("--backend", default=None,
                        help="hf, openai or fast (default: fast on a GPU, hf otherwise)")
    parser.add_argument("--base-url", default=None, help="openai backend: endpoint (default: OpenAI's)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="openai backend: the environment variable that holds the key")
    parser.add_argument("--concurrency", type=int, default=8, help="openai backend: parallel requests")
    parser.add_argument("--timeout", type=finite_float, default=120.0, help="openai backend: seconds per request")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="openai backend: retries of a failed request (backoff); 0 = fail at once")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different generation run in --out (deletes only that run's own files; a "
                             "folder holding no generation run is never overwritten)")


def run(args: argparse.Namespace) -> int:
    from safepref.generate import default_backend, generation_config, make_backend, run_generation
    from safepref.generate.shards import check_out_dir
    from safepref.sources import load_prompts

    config = generation_config(args.preset, args.config, args.overrides)
    check_out_dir(args.out)  # before loading any model: a bad --out must not cost minutes of loading
    prompts, report = load_prompts(args.prompts, {"prompt": args.prompt_field})
    print(f"{len(prompts)} prompts from {args.prompts} (dropped: {dict(report.dropped) or 'none'})")
    name = args.backend or default_backend()
    if name == "openai":
        backend = make_backend(name, args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                               concurrency=args.concurrency, timeout=args.timeout, max_retries=args.max_retries,
                               cache_dir=f"{args.out}/api_cache")
    else:
        backend = make_backend(name, args.model, device=args.device, dtype=args.dtype,
                               trust_remote_code=args.trust_remote_code)
    summary = run_generation(prompts, backend, config, args.out, overwrite=args.overwrite)
    summary["source"] = report.as_dict()
    print(json.dumps({k: summary[k] for k in ("prompts", "prompts_resumed", "responses", "dropped",
                                               "seconds_this_run")}, indent=1))
    print(f"wrote {args.out}/responses.jsonl")
    return 0
