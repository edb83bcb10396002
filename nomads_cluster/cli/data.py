"""The data's commands: ingest survey answers, assign files, reassign stored users,
and the database schema."""

import os
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import click

from ..segmentation.model import DEFAULT_MODEL_DIR, load_model
from .service import (
    counted,
    database,
    registry,
    served_model,
    service_errors,
    settings,
    training_packages,
)

BAD_ROWS_SHOWN = 20  # with --skip-bad-rows, the first ones are listed, then a count


@click.command()
@click.argument("survey", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ingest(survey: Path) -> None:
    """Load the answers of a survey export into the database (known answers skipped)."""
    from ..store.records import chosen_interests

    with training_packages("ingest"):
        from ..segmentation.survey import read_survey_answers

    answers = read_survey_answers(survey)
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
    with database() as store:
        added = store.survey.add(rows)
    click.echo(
        f"{survey.name}: {counted(added, 'new answer')} stored, {len(rows) - added} already known"
    )


@click.command()
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
    with training_packages("assign"):
        from .offline import assign_file

    if output.suffix.lower() not in (".csv", ".jsonl", ".ndjson"):
        raise click.BadParameter("use a .csv or .jsonl file", param_hint="--output")
    user_store, after_failure = None, f"nothing was written to {output}"
    resources = ExitStack()
    if store:
        models = resources.enter_context(registry())
        model, user_store = served_model(models, "assigning"), models.store
        after_failure += " (the chunks before the failure stay stored)"
    else:  # the model alone: neither the web layer nor the database to load
        model = load_model(os.environ.get("NOMADS_MODEL_DIR", DEFAULT_MODEL_DIR))
    size = input_path.stat().st_size
    bar = click.progressbar(length=size, label=f"assigning {input_path.name}", file=sys.stderr)
    with resources, bar, service_errors(f"; {after_failure}"):
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
    for bad_row in summary.bad_rows[:BAD_ROWS_SHOWN]:
        click.echo(f"{input_path.name}, line {bad_row.line}: {bad_row.reason}", err=True)
    if len(summary.bad_rows) > BAD_ROWS_SHOWN:
        more = counted(len(summary.bad_rows) - BAD_ROWS_SHOWN, "more bad row")
        click.echo(f"... and {more}", err=True)
    skipped = f", skipped {counted(len(summary.bad_rows), 'bad row')}" if summary.bad_rows else ""
    stored = " and stored them" if store else ""
    click.echo(
        f"assigned {counted(summary.assigned, 'user')}{stored}{skipped}: wrote {output}", err=True
    )


@click.command()
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Users scored and committed together.",
)
def reassign(batch_size: int) -> None:
    """Re-score every stored user with the version the fleet serves (after `promote`
    or `rollback`).

    Each batch is committed on its own, and each change is added to the user's
    history. Stopped midway, it can be run again: it goes on with the users not yet
    on the current model.
    """
    from ..store.reassign import ReassignReport
    from ..store.reassign import reassign as reassign_users

    def progress(report: ReassignReport) -> None:
        click.echo(f"  {report.reassigned} reassigned so far", err=True)

    with registry() as models:
        model = served_model(models, "reassigning")
        going_on = "; the batches before were committed: run reassign again to go on"
        with service_errors(going_on):
            report = reassign_users(models.store, model, batch_size, progress)
    click.echo(
        f"reassigned {counted(report.reassigned, 'user')} to model {model.version}: "
        f"{report.changed} changed segment"
        + (f", {report.skipped} skipped (assigned again meanwhile)" if report.skipped else "")
    )
    for (old, new), users in sorted(report.moves.items()):
        if old != new:
            click.echo(f"  segment {old} -> {new}: {users}")


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
def upgrade() -> None:
    """Apply every migration the database lacks; on a registry that serves no model
    yet, file and serve the committed model/ (or NOMADS_MODEL_DIR)."""
    from ..store.migrations import upgrade as upgrade_schema
    from ..store.registry import ModelRegistry

    with settings() as app, database() as store:
        before, after = upgrade_schema(store.engine)
        store.schema_revision = after
        click.echo(f"database schema: {before or 'empty'} -> {after}")
        first = ModelRegistry(store).serve_first(app.config["MODEL_DIR"])
    if first is not None:
        click.echo(f"the registry serves {first}, filed from {app.config['MODEL_DIR']}")
