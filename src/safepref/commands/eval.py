"""Evaluate a model: jailbreak attack success rate, over-refusal, general capability.

  safepref eval jailbreak --model smollm2-135m-instruct --prompts advbench:100 --judge keyword \\
      --judge classifier --out out/jb
  safepref eval jailbreak --answers out/jb/answers.jsonl --judge rubric --judge-model gpt-4o --out out/jb
  safepref eval jailbreak --answers out/jb/answers.jsonl --judge rubric --judge-model local \\
      --judge-base-url http://127.0.0.1:8000/v1 --out out/jb
  safepref eval refusal --model smollm2-135m-instruct --out out/xstest
  safepref eval train-judge --compare
  safepref eval general --model smollm2-135m-instruct --tasks safepref_basic_mc --out out/general

Judges: keyword[:<phrase list>], rubric[:<model>], safety (default offline judge), classifier,
hf-classifier:<folder or hub id>, llama-guard:<model>, yes-no:<model> (with --hf-template).
Each sub-command has its own --help.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any


def _add_judge_options(parser: argparse.ArgumentParser) -> None:
    from safepref.config import add_arguments_from
    from safepref.evaluate.judges import JudgeSettings

    add_arguments_from(parser.add_argument_group("judge options"), JudgeSettings, dest_prefix="judge_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command", metavar="EVAL")
    sub.required = True

    from safepref.config import add_arguments_from
    from safepref.evaluate import jailbreak, refusal_eval
    from safepref.stages import JailbreakCall, RefusalCall

    jb = sub.add_parser("jailbreak", help="attack success rate on harmful prompts, by several judges",
                        description=jailbreak.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments_from(jb, JailbreakCall)  # the stage's options, help from its fields; then the judges'
    _add_judge_options(jb)
    jb.set_defaults(_eval=_run_jailbreak)

    rf = sub.add_parser("refusal", help="over-refusal on XSTest: refusal rate (safe), compliance (unsafe)",
                        description=refusal_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments_from(rf, RefusalCall)
    _add_judge_options(rf)
    rf.set_defaults(_eval=_run_refusal)

    from safepref.evaluate import finetuned_judge, safety_judge

    tj = sub.add_parser("train-judge", help="train an offline judge (default: the safety judge, request + answer)",
                        description=safety_judge.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tj.add_argument("--kind", default="safety", choices=["safety", "classifier", "finetuned"],
                    help="safety: request+answer features and a head, on the CPU (the default judge); classifier: "
                         "the older answer-only GPTFuzz classifier; finetuned: a MiniLM cross-encoder (GPU)")
    tj.add_argument("--preset", default=None, choices=list(finetuned_judge.PRESETS),
                    help="finetuned: the backbone (minilm: all-MiniLM-L6-v2, the default; smollm2: the embedded "
                         "SmolLM2-135M-Instruct through its chat template, a few minutes on a GPU)")
    tj.add_argument("--recipe", default=None,
                    help=f"safety: {', '.join(safety_judge.RECIPES)} (default {safety_judge.DEFAULT_RECIPE}); "
                         "classifier: word, char, word+char, minilm, minilm+word+char")
    tj.add_argument("--data", default=None, help="classifier: folder with train.csv/evaluate.csv (default "
                                                 "$SAFEPREF_DATA/gptfuzz)")
    tj.add_argument("--max-rows-per-set", type=int, default=None,
                    help="safety/finetuned: cap each training set (safety default: 1,500, GPTFuzz uncapped; 0: no cap)")
    tj.add_argument("--gptfuzz-share", type=float, default=None,
                    help=f"safety: GPTFuzz's human labels' share of the training weight (default "
                         f"{safety_judge.GPTFUZZ_SHARE}; 0: every set the same)")
    tj.add_argument("--out", default=None,
                    help="save here (default: $SAFEPREF_CACHE/judges/<kind>, the judge named after the kind)")
    tj.add_argument("--compare", action="store_true", help="train and measure every recipe (nothing is saved)")
    tj.add_argument("--force", action="store_true", help="retrain even when a trained judge exists")
    tj.set_defaults(_eval=_run_train_judge)

    from safepref.evaluate import validate

    vj = sub.add_parser("validate-judge", help="agreement of judges (or refusal detectors) with human labels",
                        description=validate.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vj.add_argument("--labels", required=True,
                    help="labelled file (.jsonl/.json/.csv/.parquet) or a named set (gptfuzz-evaluate, "
                         "pku-realign:held-out, ...)")
    vj.add_argument("--judge", dest="judges", action="append", default=[], metavar="JUDGE",
                    help="repeatable: a harm judge (keyword[:<list>], classifier, safety, rubric, hf-classifier:...)")
    vj.add_argument("--detector", dest="detectors", action="append", default=[], metavar="DETECTOR",
                    help="repeatable: a refusal detector (keyword, opening, llm); labels then mark refusals")
    vj.add_argument("--out", required=True, help="output folder")
    for role in ("prompt", "response", "label", "category"):
        vj.add_argument(f"--{role}-field", default=None, help=f"column of the {role} (default: the usual names)")
    vj.add_argument("--limit", type=int, default=None, help="only the first N labelled rows")
    vj.add_argument("--chunk", type=int, default=256, help="rows judged between two saves (resume granularity)")
    _add_judge_options(vj)
    vj.set_defaults(_eval=_run_validate)

    general_help = "general capability through lm-evaluation-harness"
    try:
        from safepref.evaluate import general
    except ImportError:
        general = None
    if general is not None:
        from safepref.stages import GeneralCall

        gp = sub.add_parser("general", help=general_help, description=general.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments_from(gp, GeneralCall)
        gp.set_defaults(_eval=_run_general)


def _settings(args: argparse.Namespace) -> Any:
    """The JudgeSettings of the --judge-* options (and --phrases, --hf-template)."""
    from safepref.config import from_arguments
    from safepref.evaluate.judges import JudgeSettings

    return from_arguments(JudgeSettings, args, dest_prefix="judge_")


def _run_jailbreak(args: argparse.Namespace) -> int:
    from safepref.config import from_arguments
    from safepref.evaluate.jailbreak import format_metrics
    from safepref.stages import JailbreakCall, jailbreak

    metrics = jailbreak(from_arguments(JailbreakCall, args, judge_settings=_settings(args)))
    print(f"{metrics['counts']['answers']} answers to {metrics['counts']['prompts']} prompts")
    print(format_metrics(metrics))
    print(f"wrote {args.out}/metrics.json, {args.out}/per_answer.jsonl, {args.out}/judgments/")
    return 0


def _run_refusal(args: argparse.Namespace) -> int:
    from safepref.config import from_arguments
    from safepref.evaluate.refusal_eval import format_metrics
    from safepref.stages import RefusalCall, refusal

    print(format_metrics(refusal(from_arguments(RefusalCall, args, judge_settings=_settings(args)))))
    print(f"wrote {args.out}/metrics.json, {args.out}/refusals.jsonl")
    return 0


def _run_general(args: argparse.Namespace) -> int:
    from pathlib import Path

    from safepref.config import from_arguments
    from safepref.stages import GeneralCall, general

    flat = general(from_arguments(GeneralCall, args))
    summary = json.loads(Path(args.out, "results.json").read_text())
    counts = summary["n_samples"]
    print(f"{'task':32} {'metric':10} {'value':>8} {'stderr':>8} {'n':>6}")
    for task, metrics in flat.items():
        n = counts.get(task, {}).get("effective", "")
        for metric, value in metrics.items():
            if not metric.endswith("_stderr"):
                stderr = metrics.get(f"{metric}_stderr")
                shown = f"{stderr:8.4f}" if stderr is not None else f"{'':8}"
                print(f"{task:32} {metric:10} {value:8.4f} {shown} {n:>6}")
    print(f"wrote {args.out}/results.json ({summary['seconds']['total']} s)")
    return 0


def _run_train_judge(args: argparse.Namespace) -> int:
    if args.preset is not None and args.kind != "finetuned":
        from safepref.errors import ConfigError

        raise ConfigError(f"--preset belongs to --kind finetuned (not --kind {args.kind})")
    if args.kind == "classifier":
        return _train_classifier(args)
    if args.kind == "finetuned":
        from safepref.evaluate import finetuned_judge

        preset = args.preset or "minilm"
        out = args.out or str(_cache_judges() / ("finetuned" if preset == "minilm" else f"finetuned-{preset}"))
        config = finetuned_judge.FinetunedJudgeConfig(**finetuned_judge.PRESETS[preset])
        meta = finetuned_judge.train_finetuned_judge(out, config, max_rows_per_set=args.max_rows_per_set)
        print(f"trained on {meta['train_rows']} rows in {meta['seconds']} s ({meta['device']}); saved to {out}")
        print(f"use it as: --judge hf-classifier:{out}")
        return 0
    from safepref.evaluate import safety_judge as sj

    # no --max-rows-per-set: the config's own cap, so the command makes the same judge as first use
    capped = {} if args.max_rows_per_set is None else {"max_rows_per_set": args.max_rows_per_set}
    if args.gptfuzz_share is not None:
        capped["gptfuzz_share"] = args.gptfuzz_share
    if args.compare:
        keys = ("accuracy", "precision", "recall", "kappa", "flagged_rate", "n")
        for recipe in sj.RECIPES:
            model = sj.train_safety_judge(sj.SafetyJudgeConfig(recipe=recipe, **capped))
            print(f"{recipe} (trained in {model.meta['seconds_total']} s):")
            for name, m in model.meta["validation"].items():
                print(f"  {name:<18} " + " ".join(f"{k}={m[k]}" for k in keys))
        print("(held-out prompts of each set; GPTFuzz: its evaluate file; nothing saved)")
        return 0
    folder = args.out or sj.default_folder()
    from safepref.paths import check_replaceable

    check_replaceable(folder, "judge.json", "trained safety judge")  # before minutes of training
    config = sj.SafetyJudgeConfig(recipe=args.recipe or sj.DEFAULT_RECIPE, **capped)
    if not args.force and args.out is None and (folder / "judge.json").exists():
        model = sj.SafetyJudgeModel.load(folder)  # this folder's, not the shipped judge
        # every setting, not only version and recipe: a changed --max-rows-per-set or --gptfuzz-share retrains
        same = model.meta.get("config") == json.loads(json.dumps(dataclasses.asdict(config)))
        if model.meta.get("version") == sj.JUDGE_VERSION and same:
            print(f"already trained ({folder}); --force retrains")
            return 0
    model = sj.train_safety_judge(config)
    model.save(folder)
    print(f"trained {config.recipe} on {model.meta['train_rows']} rows in {model.meta['seconds_total']} s "
          f"(features {model.meta['seconds_features']} s); saved to {folder}")
    for name, m in model.meta["validation"].items():
        print(f"  held-out {name:<18} n={m['n']} accuracy={m['accuracy']} {m['accuracy_ci']} "
              f"precision={m['precision']} recall={m['recall']} kappa={m['kappa']}")
    return 0


def _cache_judges() -> Any:
    from safepref import paths

    return paths.cache_dir("judges")


def _train_classifier(args: argparse.Namespace) -> int:
    from safepref.evaluate import harm_classifier as hc

    recipe = args.recipe or hc.DEFAULT_RECIPE
    hc.check_recipe(recipe)
    keys = ("accuracy", "precision", "recall", "f1", "n")
    if args.compare:
        results = hc.compare_recipes(data_dir=args.data)
        print(f"{'recipe':<18} " + " ".join(f"{k:>9}" for k in (*keys, "seconds")))
        for name, m in results.items():
            print(f"{name:<18} " + " ".join(f"{m[k]:>9}" for k in (*keys, "seconds")))
        print("(trained on GPTFuzz train, measured on its evaluate split; nothing saved)")
        return 0
    folder = args.out or hc.default_folder()
    from safepref.paths import check_replaceable

    check_replaceable(folder, "meta.json", "trained classifier judge")  # before training
    if not args.force and args.out is None and (hc.default_folder() / "meta.json").exists():
        classifier = hc.load_default_classifier(train_if_missing=False)
        if classifier.meta.get("version") == hc.CLASSIFIER_VERSION and classifier.recipe == recipe:
            print(f"already trained ({folder}); --force retrains")
            print(json.dumps({k: classifier.meta["validation"][k] for k in keys}))
            return 0
    classifier = hc.train_classifier(recipe, args.data)
    classifier.save(folder)
    validation = classifier.meta["validation"]
    print(f"trained {recipe} on {classifier.meta['train']['rows']} answers "
          f"in {classifier.meta['train_seconds']} s; saved to {folder}")
    print("validation (GPTFuzz evaluate split): " + json.dumps({k: validation[k] for k in keys}))
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from safepref.evaluate import validate
    from safepref.evaluate.labels import LabelFields

    fields = LabelFields(prompt=args.prompt_field, response=args.response_field, label=args.label_field,
                         category=args.category_field)
    config = validate.ValidateConfig(labels=args.labels, out=args.out, judges=args.judges,
                                     detectors=args.detectors, fields=fields, limit=args.limit, chunk=args.chunk,
                                     judge_settings=_settings(args))
    summary = validate.validate(config)
    print(validate.format_validation(summary))
    print(f"wrote {args.out}/validation.json, {args.out}/verdicts/, {args.out}/disagreements/")
    return 0


def run(args: argparse.Namespace) -> int:
    return int(args._eval(args) or 0)
