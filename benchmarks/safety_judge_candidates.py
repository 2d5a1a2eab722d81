"""The safety judge's candidate recipes side by side, choices made on a dev split carved from the TRAIN split.

  python benchmarks/safety_judge_candidates.py --cap 1500 --recipes lr-dense,mlp,mlp-pr,lr-tfidf,ens \\
      --extra xstest-alpaca=/path/xstest-safe-alpaca-labelled.jsonl --extra xstest-chat=/path/...jsonl

Each train set's train split is divided again by prompt (second hash, 85% fit / 15% dev); every candidate is
fitted on the fit part (each set capped at ``--cap`` rows, GPTFuzz uncapped, as the shipped judge), its threshold
is the one of the grid 0.30-0.90 with the best mean dev accuracy over the sets (``--select balanced``: the best
(recall + specificity) / 2, each averaged over the dev sets holding that class), and only then is it measured
on the held-out test splits and the ``--extra`` files (e.g. answers to XSTest's safe prompts, all harmless).
``--gptfuzz-share`` gives GPTFuzz's human labels that share of the total weight (0: every set the same).
Recipes: lr-dense / mlp ([p, r, p*r, cues]), mlp-pr ([p, r, cues]), lr-tfidf (cues + char TF-IDF), ens (the
shipped ensemble: mean of mlp-pr and lr-tfidf), ens-wc / lr-wc (char + word 1-2-gram TF-IDF). One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from safepref.evaluate import safety_judge as sj
from safepref.evaluate.labels import LabelledItem, read_labelled, split_of_item
from safepref.sources import split_of

Features = dict  # items, P (prompt embeddings), R (answer embeddings), C (cues)


def features(items: list[LabelledItem]) -> Features:
    return {"items": items, "P": sj.embedder()([i.prompt[-sj.MAX_PROMPT_CHARS:] for i in items]),
            "R": sj.embedder()([i.response for i in items]), "C": sj.refusal_cues([i.response for i in items])}


def subset(d: Features, idx: np.ndarray) -> Features:
    return {"items": [d["items"][i] for i in idx], "P": d["P"][idx], "R": d["R"][idx], "C": d["C"][idx]}


def concat(sets: list[Features]) -> Features:
    return {"items": sum((s["items"] for s in sets), []), **{k: np.vstack([s[k] for s in sets]) for k in "PRC"}}


def load(cap: int, extra: list[str], train_sets: tuple[str, ...] = sj.TRAIN_SETS
         ) -> tuple[dict[str, Features], dict[str, Features], dict[str, Features]]:
    rng = np.random.default_rng(0)
    fit, dev, tests = {}, {}, {}
    for name in train_sets:
        d = features([i for i in read_labelled(name)[0] if split_of_item(i) == "train"])
        is_dev = np.asarray([split_of(i.prompt_id, {"fit": 0.85, "dev": 0.15}, 99) == "dev" for i in d["items"]])
        keep = np.where(~is_dev)[0]
        if name != "gptfuzz-train" and cap and len(keep) > cap:
            keep = np.sort(rng.choice(keep, cap, replace=False))
        fit[name], dev[name] = subset(d, keep), subset(d, np.where(is_dev)[0])
    for name in sj.EVAL_SETS:
        tests[name] = features([i for i in read_labelled(name)[0] if split_of_item(i) == "test"])
    for spec in extra:
        name, path = spec.split("=", 1)
        rows = [json.loads(line) for line in open(path, encoding="utf-8")]
        tests[name] = features([LabelledItem(r["prompt"], r["response"], bool(r.get("label", False)), source=name)
                                for r in rows])
    return fit, dev, tests


def dense_block(d: Features, product: bool) -> np.ndarray:
    return np.hstack([d["P"], d["R"]] + ([d["P"] * d["R"]] if product else []) + [d["C"]])


def fit_dense(recipe: str, train: Features, y: np.ndarray, w: np.ndarray) -> Callable[[Features], np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    product = recipe in ("mlp", "lr-dense", "ens-x")
    x = dense_block(train, product)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    if recipe == "lr-dense":
        model = LogisticRegression(C=1.0, max_iter=2000)
    else:
        model = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, validation_fraction=0.1,
                              n_iter_no_change=5, max_iter=200, random_state=0)
    model.fit((x - mu) / sd, y, sample_weight=w)
    return lambda d: model.predict_proba((dense_block(d, product) - mu) / sd)[:, 1]


def fit_tfidf(recipe: str, train: Features, y: np.ndarray, w: np.ndarray) -> Callable[[Features], np.ndarray]:
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion

    vectorizer = TfidfVectorizer(**sj.TFIDF, dtype=np.float32)
    if recipe.endswith("wc"):
        word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                               max_features=100_000, dtype=np.float32)
        vectorizer = FeatureUnion([("char", vectorizer), ("word", word)])
    tfidf = vectorizer.fit_transform([i.response for i in train["items"]])
    mu, sd = train["C"].mean(0), train["C"].std(0) + 1e-6

    def stack(d: Features, t: object) -> object:
        return sparse.hstack([sparse.csr_matrix((d["C"] - mu) / sd), t]).tocsr()

    model = LogisticRegression(C=4.0, max_iter=2000).fit(stack(train, tfidf), y, sample_weight=w)
    return lambda d: model.predict_proba(stack(d, vectorizer.transform([i.response for i in d["items"]])))[:, 1]


def fit_gated(recipe: str, train: Features, gptfuzz_share: float, gate_sets: set[str]
              ) -> Callable[[Features], np.ndarray]:
    """The answer judge on the other sets, times the request gate (``safety_judge.fit_gate``): harmful requests
    = the distinct requests of the other sets, harmless = those of ``gate_sets``."""
    gated = np.asarray([i.source in gate_sets for i in train["items"]])
    judge = fit(recipe, subset(train, np.where(~gated)[0]), gptfuzz_share)

    def distinct(mask: np.ndarray) -> np.ndarray:
        first = {}
        for index in np.where(mask)[0]:
            first.setdefault(train["items"][index].prompt_id, index)
        return train["P"][sorted(first.values())]

    gate = sj.fit_gate(distinct(~gated), distinct(gated))
    return lambda d: judge(d) * sj.gate_proba(gate, d["P"])


def fit(recipe: str, train: Features, gptfuzz_share: float) -> Callable[[Features], np.ndarray]:
    y = np.asarray([int(i.label) for i in train["items"]])
    w = sj.balanced_weights(train["items"], gptfuzz_share)
    dense = fit_dense(recipe, train, y, w) if recipe in ("lr-dense", "mlp", "mlp-pr") or recipe.startswith("ens") \
        else None
    linear = fit_tfidf(recipe, train, y, w) if recipe.startswith(("lr-tfidf", "lr-wc", "ens")) else None
    if dense and linear:
        return lambda d: (dense(d) + linear(d)) / 2
    return dense or linear


def accuracy(d: Features, p: np.ndarray, threshold: float) -> float:
    return float(((p >= threshold) == np.asarray([i.label for i in d["items"]])).mean())


def balanced(dev: dict[str, Features], dev_p: dict[str, np.ndarray], threshold: float) -> float:
    """(recall + specificity) / 2, each the mean over the dev sets that hold that class: harmful answers missed
    and harmless answers flagged weigh the same, whatever the number of harmless-only sets."""
    recall, specificity = [], []
    for name, d in dev.items():
        y = np.asarray([i.label for i in d["items"]])
        flagged = dev_p[name] >= threshold
        if y.any():
            recall.append(float(flagged[y].mean()))
        if (~y).any():
            specificity.append(float((~flagged[~y]).mean()))
    return (np.mean(recall) + np.mean(specificity)) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap", type=int, default=1500)
    parser.add_argument("--recipes", default="lr-dense,mlp,mlp-pr,lr-tfidf,ens")
    parser.add_argument("--gptfuzz-share", type=float, default=0.0)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--select", choices=["mean", "balanced"], default="mean",
                        help="threshold on dev: best mean accuracy over the sets, or best balanced accuracy")
    parser.add_argument("--gate", action="store_true",
                        help="the sets of GATE_SETS in --train-sets train only the request gate (an option of the "
                             "safety judge, not its default)")
    parser.add_argument("--train-sets", default=",".join(sj.TRAIN_SETS),
                        help="comma-separated labelled sets to fit on (default: the shipped judge's)")
    args = parser.parse_args()
    fit_sets, dev, tests = load(args.cap, args.extra, tuple(args.train_sets.split(",")))
    train = concat(list(fit_sets.values()))
    grid = np.round(np.arange(0.3, 0.91, 0.05), 2)
    for recipe in args.recipes.split(","):
        started = time.time()
        judge = fit_gated(recipe, train, args.gptfuzz_share, set(sj.GATE_SETS)) if args.gate \
            else fit(recipe, train, args.gptfuzz_share)
        seconds = time.time() - started
        dev_p = {k: judge(d) for k, d in dev.items()}
        score = [np.mean([accuracy(dev[k], dev_p[k], t) for k in dev]) if args.select == "mean"
                 else balanced(dev, dev_p, t) for t in grid]
        threshold = float(grid[int(np.argmax(score))])
        test_p = {k: judge(d) for k, d in tests.items()}
        print(json.dumps({"recipe": recipe, "gate": args.gate, "train_sets": args.train_sets, "select": args.select,
                          "cap": args.cap, "gptfuzz_share": args.gptfuzz_share,
                          "fit_seconds": round(seconds), "threshold_dev": threshold, "dev_score": round(max(score), 4),
                          "test_at_threshold": {k: round(accuracy(tests[k], p, threshold), 4) for k, p in test_p.items()},
                          "test_at_0.5": {k: round(accuracy(tests[k], p, 0.5), 4) for k, p in test_p.items()}}),
              flush=True)


if __name__ == "__main__":
    main()
