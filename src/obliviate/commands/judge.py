"""``obliviate judge``: train (or read from the cache) the offline toxicity judge, and score texts."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  obliviate judge train --data ../shared/data/toxigen/annotated_train.csv
  obliviate judge score --data ../shared/data/toxigen/annotated_train.csv --text "some text" --text "another"
  obliviate judge score --judge path/to/toxigen_roberta --file generations.txt   # any local HF classifier"""


def register(sub, name: str) -> None:
    p = sub.add_parser(name, help="offline toxicity judge: train it on ToxiGen's annotations, score texts",
                       description="The 'tfidf' judge is a logistic regression on TF-IDF n-grams trained on ToxiGen's "
                                   "human annotations (toxicity_human >= 3 is toxic), cached under $OBLIVIATE_CACHE/judges; "
                                   "a directory is a local Hugging Face sequence-classification model.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="judge_action", required=True, metavar="ACTION")
    train = actions.add_parser("train", help="train the TF-IDF judge (or read it from the cache) and print its held-out AUC")
    _data_args(train)
    train.add_argument("--retrain", action="store_true", help="train even if a cached judge exists")
    score = actions.add_parser("score", help="print P(toxic) of each text")
    score.add_argument("--judge", default="tfidf", help="'tfidf' (default) or a local HF sequence-classification directory")
    score.add_argument("--toxic-index", type=int, default=None, help="HF judge: label index of 'toxic' (default: from id2label, else 1)")
    _data_args(score)
    score.add_argument("--text", action="append", default=[], help="a text to score (repeatable)")
    score.add_argument("--file", default=None, help="a file of texts to score, one a line")
    p.set_defaults(func=run)


def _data_args(p) -> None:
    p.add_argument("--data", default=None, help="ToxiGen annotated_train.csv (or its folder) the TF-IDF judge is trained on")
    p.add_argument("--target", default="human", choices=("human", "label"),
                   help="toxic means toxicity_human >= --threshold ('human', default) or label == hate ('label')")
    p.add_argument("--threshold", type=float, default=3.0, help="toxicity_human at or above which a statement is toxic (default 3)")


def run(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..eval.judge import TfidfSettings, judge_cache_path, load_judge, tfidf_judge

    settings = TfidfSettings(target=args.target, threshold=args.threshold)
    if args.judge_action == "train":
        if args.data is None:
            raise ConfigError("obliviate judge train needs --data (ToxiGen's annotated_train.csv).")
        cached = judge_cache_path(args.data, settings).is_dir() and not args.retrain
        judge = tfidf_judge(args.data, settings, retrain=args.retrain)
        m = judge.metrics
        print(f"judge: {judge.name}{' (read from the cache; --retrain to train again)' if cached else ''}")
        print(f"held-out ROC AUC {m['heldout_auc']:.4f}, accuracy {m['heldout_accuracy']:.4f} "
              f"({m['n_heldout']} held out, stratified; trained on {m['n_train']}; toxic rate {m['toxic_rate']:.3f}; "
              f"training took {m['train_s']:.1f} s)")
        print(f"cached at: {judge.cache_path}")
        return 0
    texts = list(args.text)
    if args.file:
        texts += [line.rstrip("\n") for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ConfigError("obliviate judge score needs --text TEXT (repeatable) or --file FILE.")
    judge = load_judge(args.judge, data=args.data, toxic_index=args.toxic_index,
                       settings=settings if args.judge == "tfidf" else None)
    print(f"judge: {judge.name}")
    for t, s in zip(texts, judge.score(texts)):
        print(f"{s:.4f}\t{t}")
    return 0
