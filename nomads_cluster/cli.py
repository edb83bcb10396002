"""The ``nomads-cluster`` command line.

Commands that use the model or the store build the app with ``create_app()``: the
same NOMADS_* (and DATABASE_URL) settings as the service.
"""

import hashlib
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask

from .model import CURRENT_FILE, DEFAULT_MODEL_DIR, ModelError, current_model_dir, load_model
from .scoring import MAX_COMPONENTS, MIN_COMPONENTS

DEFAULT_SURVEY = DEFAULT_MODEL_DIR.parent.parent / "shared" / "data" / "survey_responses.csv"
BAD_ROWS_SHOWN = 20  # with --skip-bad-rows, the first ones are listed, then a count


@contextmanager
def _service() -> Iterator[Flask]:
    """The app as the service builds it; its database connections closed at the end."""
    from . import ConfigError, create_app
    from .store import StoreUnavailable

    try:
        app = create_app()
    except (ConfigError, ModelError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield app
    finally:
        app.extensions["user_store"].engine.dispose()


@click.group()
def main() -> None:
    """nomads-cluster: segment the DigitalAndNomads users by interests."""


@main.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
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
def train(
    data: Path,
    from_db: bool,
    out: Path,
    registry: Path | None,
    previous: Path | None,
    components: int | str,
    algorithm: str,
) -> None:
    """Train the segmentation model on the survey and write it with its card."""
    # Imported here: scikit-learn and pandas are for training, not for serving.
    from .survey import Survey, SurveyFormatError, read_survey
    from .training import train as train_model

    if from_db:
        with _service() as app:
            features, hashes = app.extensions["user_store"].response_features()
        if not len(features):
            raise click.ClickException("the database holds no survey answers: run ingest first")
        digest = hashlib.sha256("".join(hashes).encode()).hexdigest()
        survey = Survey(features=features, sha256=digest, source="database: survey_responses")
    else:
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
    if registry is not None:
        out = registry / f".training-{os.getpid()}"  # named by its version once written
    card = train_model(survey, out, previous_model, components, algorithm)
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
    if value.isdigit() and MIN_COMPONENTS <= int(value) <= MAX_COMPONENTS:
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


@main.command()
@click.argument("version")
@click.option(
    "--registry",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    envvar="NOMADS_MODEL_DIR",
    required=True,
    help="The registry of model versions (default: $NOMADS_MODEL_DIR, as the service).",
)
def promote(version: str, registry: Path) -> None:
    """Make VERSION the registry's current model; running servers follow it."""
    from .model import promote as promote_model

    try:
        replaced = promote_model(registry, version)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"current model: {version} (was {replaced or 'none'})")


@main.command()
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default="model/",
)
def heatmap(model_dir: Path) -> None:
    """Draw heatmap.png beside a trained model (train draws it for new models)."""
    from .model import HEATMAP_FILE
    from .training import draw_heatmap

    try:
        model = load_model(model_dir)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    heatmap = model_dir / HEATMAP_FILE
    draw_heatmap(model.scorer.components, model.card.segments, heatmap, model.card.algorithm)
    click.echo(f"wrote {heatmap}")


@main.command()
@click.argument("survey", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ingest(survey: Path) -> None:
    """Load the answers of a survey export into the database (known answers skipped)."""
    from .store import StoreUnavailable, chosen_interests
    from .survey import SurveyFormatError, read_survey_answers

    try:
        answers = read_survey_answers(survey)
    except SurveyFormatError as exc:
        raise click.ClickException(str(exc)) from None
    now = datetime.now(UTC)
    rows = [
        {
            "answer_sha256": answer.sha256,
            "answered_at": answer.answered_at,
            "interests": list(chosen_interests(answer.features)),
            "source_file": survey.name,
            "ingested_at": now,
        }
        for answer in answers
    ]
    try:
        with _service() as app:
            added = app.extensions["user_store"].add_responses(rows)
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{survey.name}: {added} new answers stored, {len(rows) - added} already known")


@main.command()
@click.argument("input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    required=True,
    help="Results file: .csv, or .jsonl for JSON Lines.",
)
@click.option(
    "--format",
    "input_format",
    type=click.Choice(["survey", "csv", "jsonl"]),
    help="The input's format [default: from the suffix and the header].",
)
@click.option("--id-column", help="The id column of a CSV [default: _id, id or user_id].")
@click.option(
    "--skip-bad-rows",
    is_flag=True,
    help="Report bad rows and go on; by default the first one stops (and nothing is written).",
)
@click.option("--store", is_flag=True, help="Also store the results in the database.")
def assign(
    input_path: Path,
    output: Path,
    input_format: str | None,
    id_column: str | None,
    skip_bad_rows: bool,
    store: bool,
) -> None:
    """Assign every user of INPUT_PATH to a segment: the survey export, a CSV with an id
    column and the 26 interest columns (0/1 or true/false), or JSON Lines of /cluster
    bodies. Streams in chunks, in bounded memory."""
    from .offline import BadRowsError, InputFormatError, assign_file

    if output.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise click.BadParameter("use a .csv or .jsonl file", param_hint="--output")
    failures: tuple[type[Exception], ...] = (InputFormatError, BadRowsError)
    user_store, after_failure = None, f"nothing was written to {output}"
    resources = ExitStack()
    if store:
        from .store import StoreUnavailable

        app = resources.enter_context(_service())
        model, user_store = app.extensions["segment_model"], app.extensions["user_store"]
        failures += (StoreUnavailable,)
        after_failure += " (the chunks before the failure stay stored)"
    else:  # the model alone: neither the web layer nor the database to load
        try:
            model = load_model(os.environ.get("NOMADS_MODEL_DIR", DEFAULT_MODEL_DIR))
        except ModelError as exc:
            raise click.ClickException(str(exc)) from None
    size = input_path.stat().st_size
    bar = click.progressbar(length=size, label=f"assigning {input_path.name}", file=sys.stderr)
    with resources, bar:
        try:
            summary = assign_file(
                input_path,
                output,
                model,
                input_format=input_format,
                id_column=id_column,
                skip_bad_rows=skip_bad_rows,
                store=user_store,
                on_progress=lambda done: bar.update(done - bar.pos),
            )
        except failures as exc:
            raise click.ClickException(f"{exc}; {after_failure}") from None
    for bad_row in summary.bad_rows[:BAD_ROWS_SHOWN]:
        click.echo(f"{input_path.name}, line {bad_row.line}: {bad_row.reason}", err=True)
    if len(summary.bad_rows) > BAD_ROWS_SHOWN:
        click.echo(f"... and {len(summary.bad_rows) - BAD_ROWS_SHOWN} more bad rows", err=True)
    skipped = f", skipped {len(summary.bad_rows)} bad rows" if summary.bad_rows else ""
    stored = " and stored them" if store else ""
    click.echo(f"assigned {summary.assigned} users{stored}{skipped}: wrote {output}", err=True)


@main.command()
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Users scored and committed together.",
)
def reassign(batch_size: int) -> None:
    """Re-score every stored user with the current model (NOMADS_MODEL_DIR).

    Each batch is committed on its own, and each change is added to the user's
    history. Stopped midway, it can be run again: it goes on with the users not yet
    on the current model.
    """
    from .reassign import ReassignReport
    from .reassign import reassign as reassign_users
    from .store import StoreUnavailable

    def progress(report: ReassignReport) -> None:
        click.echo(f"  {report.reassigned} reassigned so far", err=True)

    with _service() as app:
        model = app.extensions["segment_model"]
        try:
            report = reassign_users(app.extensions["user_store"], model, batch_size, progress)
        except StoreUnavailable as exc:
            raise click.ClickException(
                f"{exc}; the batches before were committed: run reassign again to go on"
            ) from None
    click.echo(
        f"reassigned {report.reassigned} users to model {model.version}: "
        f"{report.changed} changed segment"
        + (f", {report.skipped} skipped (assigned again meanwhile)" if report.skipped else "")
    )
    for (old, new), users in sorted(report.moves.items()):
        if old != new:
            click.echo(f"  segment {old} -> {new}: {users}")


@main.group()
def db() -> None:
    """The database schema."""


@db.command()
def upgrade() -> None:
    """Apply every migration the database lacks."""
    from .migrations import upgrade as upgrade_schema

    with _service() as app:
        before, after = upgrade_schema(app.extensions["user_store"].engine)
    click.echo(f"database schema: {before or 'empty'} -> {after}")
