"""The ``nomads-cluster`` command line."""

import os
from pathlib import Path

import click

from .model import DEFAULT_MODEL_DIR

DEFAULT_SURVEY = DEFAULT_MODEL_DIR.parent.parent / "shared" / "data" / "survey_responses.csv"


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
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default="model/",
    help="Where to write model.pkl and model.json.",
)
def train(data: Path, out: Path) -> None:
    """Train the segmentation model on the survey and write it with its card."""
    # Imported here: scikit-learn and pandas are for training, not for serving.
    from .survey import SurveyFormatError, read_survey
    from .training import train as train_model

    try:
        survey = read_survey(data)
    except SurveyFormatError as exc:
        raise click.ClickException(str(exc)) from None
    card = train_model(survey, out)
    click.echo(
        f"trained on {survey.n_rows} answers: model {card['version']}, "
        f"reconstruction error {card['reconstruction_error']:.4f}, wrote {out}"
    )
    for segment in card["segments"]:
        click.echo(f"  {segment['segment']}: {segment['label']} ({segment['share']:.0%})")
