"""The model's commands: train, import-model, churn, promote, heatmap."""

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..segmentation.card import DEFAULT_ANCHOR
from ..segmentation.model import (
    CARD_FILE,
    CURRENT_FILE,
    DEFAULT_MODEL_DIR,
    ModelError,
    SegmentModel,
    current_model_dir,
    load_model,
)
from ..segmentation.scoring import MAX_COMPONENTS, MIN_COMPONENTS
from .service import service, training_packages

if TYPE_CHECKING:
    from ..store.churn import SegmentMoves

DEFAULT_SURVEY = DEFAULT_MODEL_DIR.parent.parent / "shared" / "data" / "survey_responses.csv"


@click.command()
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),  # checked unless --from-db
    default=lambda: os.environ.get("NOMADS_SURVEY_PATH", DEFAULT_SURVEY),
    show_default="$NOMADS_SURVEY_PATH or ../shared/data/survey_responses.csv",
    help="The survey CSV to train on.",
)
@click.option(
    "--from-db",
    is_flag=True,
    help="Train on every survey answer ingested into the database instead of --data.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default="model/",
    help="Where to write model.pkl and model.json.",
)
@click.option(
    "--registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the model as a new version in this registry (REGISTRY/VERSION/), "
    "instead of --out; its current model is then the default --previous.",
)
@click.option(
    "--previous",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The model this one replaces: segments keep the numbers of those they match.",
)
@click.option(
    "--components",
    default="4",
    show_default=True,
    metavar="N|auto",
    callback=lambda _ctx, _param, value: _components(value),
    help="Segments to fit (2 to 10), or auto: compare NMF and k-means with 2 to 8 "
    "segments, write selection.md and selection.png beside the model, and fit the "
    "count the documented rule picks for --algorithm.",
)
@click.option(
    "--algorithm",
    type=click.Choice(["nmf", "kmeans"]),
    default="nmf",
    show_default=True,
    help="NMF (the production model), or the k-means alternative.",
)
@click.option(
    "--warm-start",
    is_flag=True,
    help="Start from the previous model's components and keep the new ones near them, "
    "so that users change segment only as far as the new data asks (NMF only).",
)
@click.option(
    "--anchor",
    type=click.FloatRange(min=0, min_open=True, max=100),
    default=DEFAULT_ANCHOR,
    show_default=True,
    help="With --warm-start: how strongly (weight of ||H - H_prev||² per training user).",
)
def train(
    data: Path,
    from_db: bool,
    out: Path,
    registry: Path | None,
    previous: Path | None,
    components: int | str,
    algorithm: str,
    warm_start: bool,
    anchor: float,
) -> None:
    """Train the segmentation model on the survey and write it with its card."""
    # Imported here: scikit-learn and pandas are for training, not for serving.
    with training_packages("train"):
        from ..segmentation.survey import Survey, SurveyFormatError, read_survey
        from ..segmentation.training import train as train_model

    if from_db:
        with service() as app:
            features, hashes = app.extensions["user_store"].response_features()
        if not len(features):
            raise click.ClickException("the database holds no survey answers: run ingest first")
        digest = hashlib.sha256("".join(hashes).encode()).hexdigest()
        survey = Survey(features=features, sha256=digest, source="database: survey_responses")
    else:
        if not data.is_file():
            raise click.BadParameter(f"{data} is not a file", param_hint="'--data'")
        try:
            survey = read_survey(data)
        except SurveyFormatError as exc:
            raise click.ClickException(str(exc)) from None
    if registry is not None and previous is None and (registry / CURRENT_FILE).exists():
        previous = current_model_dir(registry)
    try:
        previous_model = load_model(previous) if previous else None
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    if warm_start and (previous_model is None or algorithm != "nmf" or components == "auto"):
        raise click.UsageError(
            "--warm-start needs --previous (or a registry with a current model), "
            "--algorithm nmf and a number of components"
        )
    if warm_start and components != previous_model.card.n_components:
        raise click.UsageError(
            f"--warm-start keeps the previous model's {previous_model.card.n_components} "
            f"segments: --components {components} differs"
        )
    if registry is not None:
        out = registry / f".training-{os.getpid()}"  # named by its version once written
    try:
        card = train_model(
            survey, out, previous_model, components, algorithm, anchor if warm_start else None
        )
    except ValueError as exc:  # a warm start from a k-means model
        raise click.ClickException(str(exc)) from None
    if registry is not None:
        out = _file_version(out, registry / card["version"])
    if "selection" in card:
        click.echo(
            f"chose {card['selection']['chosen_components']} segments: "
            f"{card['selection']['rule']} (see {out / card['selection']['report']})"
        )
    click.echo(
        f"trained on {survey.n_rows} answers: model {card['version']}, "
        f"reconstruction error {card['reconstruction_error']:.4f}, wrote {out}"
    )
    if "warm_start" in card:
        warm = card["warm_start"]
        click.echo(
            f"warm start from {warm['previous_version']} (anchor {warm['anchor']:g}): "
            f"{warm['kept_training_users']:.0%} of the training users keep their segment "
            f"(a cold fit: {warm['kept_training_users_cold']:.0%}), reconstruction error "
            f"{warm['error_vs_cold']:+.1%} against a cold fit"
        )
    matches = {m["segment"]: m for m in card.get("numbering", {}).get("matches", [])}
    for segment in sorted(card["segments"], key=lambda s: s["segment"]):
        line = f"  {segment['segment']}: {segment['label']} ({segment['share']:.0%})"
        match = matches.get(segment["segment"])
        if match and match["previous_segment"] is None:
            line += " new segment"
        elif match:
            line += f" continues segment {match['previous_segment']} ({match['similarity']:.2f})"
        click.echo(line)
    for number in card.get("numbering", {}).get("retired", []):
        click.echo(f"  {number}: retired (no new segment matches it)")
    if registry is not None:
        click.echo(f"serve it with: nomads-cluster promote {card['version']} --registry {registry}")


def _components(value: str) -> int | str:
    if value == "auto":
        return value
    # ASCII digits: str.isdigit() also takes "²", which int() refuses.
    if re.fullmatch(r"[0-9]{1,3}", value) and MIN_COMPONENTS <= int(value) <= MAX_COMPONENTS:
        return int(value)
    raise click.BadParameter(
        f"{value!r}: a number of segments from {MIN_COMPONENTS} to {MAX_COMPONENTS}, or auto"
    )


def _file_version(trained: Path, version_dir: Path) -> Path:
    """Move a freshly trained model to its version's place in the registry."""
    if version_dir.exists():  # the same model, trained before: keep the one filed
        shutil.rmtree(trained)
    else:
        trained.rename(version_dir)
    return version_dir


@click.command("import-model")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The directory to write the model, its card and heatmap to (a NOMADS_MODEL_DIR).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The survey CSV it was trained on: the card then gives each segment's share "
    "and the data's hash (a k-means model needs it).",
)
def import_model(model_file: Path, out: Path, data: Path | None) -> None:
    """Serve MODEL_FILE, an NMF or k-means joblib file trained elsewhere (the original
    service's model.pkl, say): checked, and written with its card and heatmap."""
    with training_packages("import-model"):
        from ..segmentation.survey import SurveyFormatError, read_survey
        from ..segmentation.training import import_model as import_file

    try:
        survey = None if data is None else read_survey(data)
        card = import_file(model_file, out, survey)
    except (ModelError, SurveyFormatError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"imported {model_file.name}: model {card['version']} ({card['algorithm']}, "
        f"{card['n_components']} segments, scikit-learn {card['sklearn_version']}), wrote {out}"
    )
    for segment in card["segments"]:
        share = "" if segment["share"] is None else f" ({segment['share']:.0%})"
        click.echo(f"  {segment['segment']}: {segment['label']}{share}")


def measure_churn_of(candidate: SegmentModel) -> "SegmentMoves":
    """The candidate's churn over the stored users (the service's database), with a
    progress bar; recorded in the candidate's card."""
    from ..store.churn import measure_churn

    with service() as app:
        store = app.extensions["user_store"]
        served = app.extensions["segment_model"].version
        total = store.count_users()
        with click.progressbar(
            length=total, label="scoring the stored users", file=sys.stderr
        ) as bar:
            report = measure_churn(store, candidate, on_chunk=bar.update)
    card_path = candidate.directory / CARD_FILE
    card = json.loads(card_path.read_text())
    card["churn"] = report.as_card(served)
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return report


def echo_churn(candidate: SegmentModel, report: "SegmentMoves") -> None:
    if not report.users:
        click.echo(f"churn of {candidate.version}: no stored users, nobody would move")
        return
    click.echo(
        f"churn of {candidate.version}: {report.share:.1%} of the {report.users} stored users "
        f"would change segment ({report.changed})"
    )
    for segment, (users, stay) in report.staying().items():
        click.echo(f"  segment {segment}: {users} users, {stay} stay ({stay / users:.0%})")
    for (old, new), users in sorted(report.moves.items()):
        if old != new:
            click.echo(f"  segment {old} -> {new}: {users}")


def _candidate(directory: Path) -> SegmentModel:
    try:
        return load_model(directory)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.argument("candidate", type=click.Path(exists=True, file_okay=False, path_type=Path))
def churn(candidate: Path) -> None:
    """How many stored users the model in CANDIDATE would move to another segment:
    every stored user re-scored, nothing written but the figures, in its card."""
    model = _candidate(candidate)
    echo_churn(model, measure_churn_of(model))
    click.echo(f"written to {candidate / CARD_FILE} (churn)")


@click.command()
@click.argument("version")
@click.option(
    "--registry",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="NOMADS_MODEL_DIR",
    show_envvar=True,
    required=True,
    help="The registry of model versions, as the service's NOMADS_MODEL_DIR.",
)
@click.option(
    "--max-churn",
    type=click.FloatRange(0, 1),
    help="Refuse the model if it would move more than this share of the stored users "
    "(0 to 1; unset: no limit).",
)
def promote(version: str, registry: Path, max_churn: float | None) -> None:
    """Make VERSION the registry's current model; running servers follow it. Prints
    how many stored users it moves to another segment (churn) first."""
    from ..segmentation.model import promote as promote_model
    from ..store.users import StoreUnavailable

    candidate = _candidate(registry / version) if (registry / version).is_dir() else None
    if candidate is not None:
        try:
            report = measure_churn_of(candidate)
        except (click.ClickException, StoreUnavailable) as exc:
            if max_churn is not None:
                raise click.ClickException(
                    f"cannot measure the churn for --max-churn: {exc}"
                ) from None
            click.echo(f"churn not measured: {exc}", err=True)
        else:
            echo_churn(candidate, report)
            if max_churn is not None and report.share > max_churn:
                raise click.ClickException(
                    f"refusing to promote {version}: it would move {report.share:.1%} of the "
                    f"stored users, above --max-churn {max_churn:.1%}"
                )
    try:
        replaced = promote_model(registry, version)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"current model: {version} (was {replaced or 'none'})")


@click.command()
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default="model/",
)
def heatmap(model_dir: Path) -> None:
    """Draw heatmap.png beside a trained model (train draws it for new models)."""
    from ..segmentation.model import HEATMAP_FILE

    with training_packages("heatmap"):
        from ..segmentation.training import draw_heatmap

    try:
        model = load_model(model_dir)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    heatmap = model_dir / HEATMAP_FILE
    draw_heatmap(model.scorer.components, model.card.segments, heatmap, model.card.algorithm)
    click.echo(f"wrote {heatmap}")
