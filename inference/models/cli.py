"""``train``, ``evaluate`` and ``predict`` subcommands of ``python -m inference``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from inference.evaluation.metrics import CLASS_LABELS

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the train, evaluate and predict subcommands."""
    train = subparsers.add_parser(
        "train",
        help="train SVM, RF, LR, optionally the U-Net, and the stacked hybrid on a cohort's "
        "train split",
        description="Extract radiomics of every train-split case, tune and fit the models, and "
        "register each as a new immutable version under MODELS.",
    )
    train.add_argument(
        "--cohort",
        required=True,
        type=Path,
        help="cohort folder (written by the synthetic generator)",
    )
    train.add_argument(
        "--out", required=True, type=Path, help="model registry folder to add the versions to"
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed for every splitter and estimator (default 0)"
    )
    train.add_argument(
        "--version", default="1", help="version string for the new models (default 1)"
    )
    train.add_argument(
        "--cv-repeats",
        type=int,
        default=3,
        help="repeats of the stratified K-fold hyperparameter search (default 3)",
    )
    train.add_argument(
        "--cv-folds",
        type=int,
        default=4,
        help="folds K of the stratified search; each class needs at least K training cases "
        "(default 4)",
    )
    train.add_argument(
        "--k-features",
        default="10,20,40",
        help="comma-separated numbers of features SelectKBest may keep, searched (default 10,20,40)",
    )
    train.add_argument(
        "--rf-trees", type=int, default=200, help="trees in the random forest (default 200)"
    )
    train.add_argument(
        "--with-unet",
        action="store_true",
        help="also train the slice U-Net, plus one U-Net per fold whose out-of-fold "
        "probabilities let the hybrid stack the U-Net (slow on CPU); without it the hybrid "
        "stacks the radiomics models only",
    )
    train.add_argument(
        "--unet-only",
        action="store_true",
        help="train and register only the U-Net, beside classical models already in --out "
        "(the hybrid is not retrained and does not stack it)",
    )
    train.add_argument(
        "--unet-epochs",
        type=int,
        default=None,
        help="maximum U-Net training epochs (default: the U-Net configuration's, 40)",
    )
    train.add_argument(
        "--unet-oof-folds",
        type=int,
        default=None,
        help="with --with-unet: folds of the out-of-fold U-Nets (default: --cv-folds, so the "
        "same seeded splits as the radiomics models' out-of-fold probabilities)",
    )
    train.add_argument(
        "--unet-oof-epochs",
        type=int,
        default=None,
        help="with --with-unet: maximum epochs of each out-of-fold U-Net (default: half of "
        "--unet-epochs)",
    )
    train.add_argument(
        "--real-data",
        action="store_true",
        help="record the cohort as real patient data (default: synthetic, stated in intended use)",
    )
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate every registered model on a cohort's test split",
        description="Run the full pipeline on each test-split case and write report.json, "
        "metrics.csv, predictions.csv, report.md and SVG figures.",
    )
    evaluate.add_argument("--cohort", required=True, type=Path, help="cohort folder")
    evaluate.add_argument("--models", required=True, type=Path, help="model registry folder")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for the report files")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    evaluate.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)"
    )
    evaluate.set_defaults(handler=_evaluate)

    predict = subparsers.add_parser(
        "predict",
        help="run the whole pipeline and every registered model on one study",
        description="Load the study, segment hyperdensities, extract radiomics and print each "
        "registered model's prediction with its provenance.",
    )
    predict.add_argument("study", type=Path, help="folder or file(s) of one DICOM study")
    predict.add_argument("--models", required=True, type=Path, help="model registry folder")
    predict.add_argument("--json", action="store_true", help="print the full result as JSON")
    predict.add_argument(
        "--device",
        choices=("cpu", "cuda", "auto"),
        default="cpu",
        help="where the U-Net runs (default cpu; auto takes a CUDA device when one is visible)",
    )
    predict.add_argument(
        "--margin",
        type=float,
        default=None,
        help="flag a prediction as uncertain when its top two probabilities differ by less "
        "than this (0-1; default: each model's stored margin, 0.15)",
    )
    predict.set_defaults(handler=_predict)


def _train(args: argparse.Namespace) -> int:
    from inference.models.classical import TrainingConfig
    from inference.models.registry import ModelRegistry
    from inference.training import cohort_from_directory, train_cohort, train_unet_model

    try:
        k_features = tuple(int(value) for value in str(args.k_features).split(","))
    except ValueError:
        print(
            f"error: --k-features {args.k_features!r} is not a comma-separated list of integers",
            file=sys.stderr,
        )
        return 2
    for option, value, lowest in (
        ("--unet-epochs", args.unet_epochs, 1),
        ("--unet-oof-folds", args.unet_oof_folds, 2),
        ("--unet-oof-epochs", args.unet_oof_epochs, 1),
    ):
        if value is not None and value < lowest:
            print(f"error: {option} {value} is too small; use {lowest} or more", file=sys.stderr)
            return 2
    if (args.unet_oof_folds or args.unet_oof_epochs) and not args.with_unet:
        print(
            "error: --unet-oof-folds and --unet-oof-epochs need --with-unet (the out-of-fold "
            "U-Nets exist only to stack the U-Net in the hybrid)",
            file=sys.stderr,
        )
        return 2
    config = TrainingConfig(
        seed=args.seed,
        n_splits=args.cv_folds,
        n_repeats=args.cv_repeats,
        k_features=k_features,
        rf_trees=args.rf_trees,
    )
    unet_config = None
    if args.unet_epochs is not None:
        from inference.models.unet import UNetConfig

        unet_config = UNetConfig(max_epochs=args.unet_epochs)
    registry = ModelRegistry(args.out)
    with_unet = args.with_unet or args.unet_only
    classical = [] if args.unet_only else ["svm", "rf", "lr", "hybrid"]
    registry.ensure_new(classical + (["unet"] if with_unet else []), args.version)
    cohort_id, entries = cohort_from_directory(args.cohort)
    if args.unet_only:
        records = [
            train_unet_model(
                entries,
                registry,
                version=args.version,
                cohort_id=cohort_id,
                seed=args.seed,
                config=unet_config,
                synthetic_training_data=not args.real_data,
            )
        ]
    else:
        records = train_cohort(
            entries,
            registry,
            version=args.version,
            cohort_id=cohort_id,
            config=config,
            synthetic_training_data=not args.real_data,
            with_unet=args.with_unet,
            unet_config=unet_config,
            unet_oof_folds=args.unet_oof_folds,
            unet_oof_epochs=args.unet_oof_epochs,
        )
    for record in records:
        print(
            f"{record.model_id}\t{record.kind}\tsha256 {record.sha256[:16]}\t{record.artifact_path}"
        )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from inference.evaluation.report import evaluate_models, write_report
    from inference.models.registry import ModelRegistry
    from inference.training import cohort_from_directory, predict_entries

    cohort_id, entries = cohort_from_directory(args.cohort)
    codes, truth, probabilities, info = predict_entries(entries, ModelRegistry(args.models))
    report = evaluate_models(
        codes,
        truth,
        probabilities,
        n_resamples=args.resamples,
        seed=args.seed,
        model_info=info,
        dataset={"cohort": cohort_id, "split": "test"},
    )
    written = write_report(report, args.out)
    for name, model in report["models"].items():
        metrics = model["metrics"]
        print(
            f"{name}\taccuracy {metrics['accuracy']['estimate']:.3f}\tmacro F1 {metrics['macro_f1']:.3f}"
            f"\tmacro AUC {metrics['macro_auc'] if metrics['macro_auc'] is not None else float('nan'):.3f}"
        )
    print(f"report: {written['markdown']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from inference.pipeline import predict_study

    result = predict_study(args.study, args.models, margin=args.margin, device=args.device)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(
        f"series {result.series_instance_uid or '(no UID)'}; {len(result.lesions)} hyperdensities; "
        f"{result.timings_s['total']:.2f} s"
    )
    for model in result.models:
        if model.prediction is None:
            print(
                f"{model.model_id}\terror {model.error['code'] if model.error else ''}: "
                f"{model.error['message'] if model.error else ''}"
            )
            continue
        probabilities = " ".join(
            f"{label} {model.prediction.probabilities[label]:.2f}" for label in CLASS_LABELS
        )
        flag = "  UNCERTAIN" if model.prediction.uncertain else ""
        print(f"{model.model_id}\t{model.prediction.label}{flag}\t{probabilities}")
    print("Research use only; not a medical device.")
    return 0
