"""The model's commands: train and import-model file candidates in the registry;
models lists them; churn, shadow, promote and rollback act on the fleet; heatmap."""

import hashlib
import json
import os
import re
import sys
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..segmentation.card import DEFAULT_ANCHOR
from ..segmentation.model import (
    DEFAULT_MODEL_DIR,
    VERSION_PATTERN,
    SegmentModel,
    load_model,
)
from ..segmentation.scoring import MAX_COMPONENTS, MIN_COMPONENTS
from .service import counted, database, registry, training_packages

if TYPE_CHECKING:
    from ..store.registry import Agreement, Churn, FiledVersion, ModelRegistry

DEFAULT_SURVEY = DEFAULT_MODEL_DIR.parent.parent / "shared" / "data" / "survey_responses.csv"


def _previous_model(previous: str | None, filing: bool) -> SegmentModel | None:
    """The model a new one continues: a registry version or a model directory; by
    default, when filing, the version the fleet serves."""
    if previous is not None and not VERSION_PATTERN.fullmatch(previous):
        return load_model(previous)
    if previous is None and not filing:
        return None
    with registry() as models:
        version = previous or models.served()
        return None if version is None else models.load(version)


def _file(directory: Path) -> str:
    """File the model written in ``directory`` in the registry; its version."""
    model = load_model(directory)
    with registry() as models:
        from ..store.registry import operator

        added = models.file(model, operator())
    click.echo(
        f"filed {model.version} in the registry"
        + ("" if added else " (filed already)")
        + f": nobody serves it yet; see `nomads-cluster churn {model.version}`, "
        f"`shadow {model.version}`, `promote {model.version}`"
    )
    return model.version


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
    help="Write model.pkl, model.json and heatmap.png to this directory instead of "
    "filing the model in the registry.",
)
@click.option(
    "--previous",
    metavar="VERSION|DIR",
    help="The model this one replaces, a registry version or a model directory: "
    "segments keep the numbers of those they match.  [default: without --out, the "
    "version the fleet serves]",
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
    out: Path | None,
    previous: str | None,
    components: int | str,
    algorithm: str,
    warm_start: bool,
    anchor: float,
) -> None:
    """Train the segmentation model on the survey and file it in the registry as a
    candidate that nobody serves yet (or write it to --out)."""
    # Imported here: scikit-learn and pandas are for training, not for serving.
    with training_packages("train"):
        from ..segmentation.survey import Survey, read_survey
        from ..segmentation.training import train as train_model

    if from_db:
        with database() as store:
            features, hashes = store.survey.features()
        if not len(features):
            raise click.ClickException("the database holds no survey answers: run ingest first")
        digest = hashlib.sha256("".join(hashes).encode()).hexdigest()
        survey = Survey(features=features, sha256=digest, source="database: survey_responses")
    else:
        if not data.is_file():
            raise click.BadParameter(f"{data} is not a file", param_hint="'--data'")
        survey = read_survey(data)
    previous_model = _previous_model(previous, filing=out is None)
    if warm_start and (previous_model is None or algorithm != "nmf" or components == "auto"):
        raise click.UsageError(
            "--warm-start needs --previous (or a served version in the registry), "
            "--algorithm nmf and a number of components"
        )
    if warm_start and components != previous_model.card.n_components:
        raise click.UsageError(
            f"--warm-start keeps the previous model's {previous_model.card.n_components} "
            f"segments: --components {components} differs"
        )
    with ExitStack() as cleanup:
        written = out or Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        # scikit-learn's warnings (a fit that stopped at its iteration limit) would be
        # printed by Python after the results, without saying which fit: gathered here,
        # they are told once each, before the results.
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            try:
                card = train_model(
                    survey,
                    written,
                    previous_model,
                    components,
                    algorithm,
                    anchor if warm_start else None,
                )
            except ValueError as exc:  # a warm start from a k-means model
                raise click.ClickException(str(exc)) from None
        for message in dict.fromkeys(str(warning.message) for warning in raised):
            click.echo(f"warning from the fit: {message}", err=True)
        version = _file(written) if out is None else None
    if "selection" in card:
        report = f" (see {out / card['selection']['report']})" if out else ""
        click.echo(
            f"chose {card['selection']['chosen_components']} segments: "
            f"{card['selection']['rule']}{report}"
        )
    where = f"wrote {out}" if version is None else "filed in the registry"
    click.echo(
        f"trained on {survey.n_rows} answers: model {card['version']}, "
        f"reconstruction error {card['reconstruction_error']:.4f}, {where}"
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


def _components(value: str) -> int | str:
    if value == "auto":
        return value
    # ASCII digits: str.isdigit() also takes "²", which int() refuses.
    if re.fullmatch(r"[0-9]{1,3}", value) and MIN_COMPONENTS <= int(value) <= MAX_COMPONENTS:
        return int(value)
    raise click.BadParameter(
        f"{value!r}: a number of segments from {MIN_COMPONENTS} to {MAX_COMPONENTS}, or auto"
    )


@click.command("import-model")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the model, its card and heatmap to this directory instead of filing it "
    "in the registry.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The survey CSV it was trained on: the card then gives each segment's share "
    "and the data's hash (a k-means model needs it).",
)
def import_model(model_file: Path, out: Path | None, data: Path | None) -> None:
    """File MODEL_FILE, an NMF or k-means joblib file trained elsewhere (the original
    service's model.pkl, say), in the registry: checked, with its card and heatmap."""
    with training_packages("import-model"):
        from ..segmentation.survey import read_survey
        from ..segmentation.training import import_model as import_file

    with ExitStack() as cleanup:
        written = out or Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        survey = None if data is None else read_survey(data)
        card = import_file(model_file, written, survey)
        where = f"wrote {out}" if out else "filed it in the registry"
        click.echo(
            f"imported {model_file.name}: model {card['version']} ({card['algorithm']}, "
            f"{card['n_components']} segments, scikit-learn {card['sklearn_version']}), {where}"
        )
        for segment in card["segments"]:
            share = "" if segment["share"] is None else f" ({segment['share']:.0%})"
            click.echo(f"  {segment['segment']}: {segment['label']}{share}")
        if out is None:
            _file(written)


def _churn_line(churn: "Churn | None") -> str:
    if churn is None:
        return "churn not measured"
    return (
        f"would move {churn.share:.1%} of {churn.users:,} stored users "
        f"(measured against {churn.measured_against})"
    )


def _shadow_line(agreement: "Agreement | None") -> str:
    if agreement is None:
        return "never shadowed"
    state = "" if agreement.shadowing else " (shadow stopped)"
    return (
        f"disagreed on {agreement.share:.1%} of {agreement.requests:,} live requests since "
        f"{agreement.since:%Y-%m-%d %H:%M} UTC{state}"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts and CI.")
def models(as_json: bool) -> None:
    """The versions filed in the registry, oldest first; * marks the one served."""
    with registry() as filed:
        versions = filed.versions()
    if as_json:
        click.echo(json.dumps([_as_json(version) for version in versions], indent=2))
        return
    if not versions:
        click.echo("the registry holds no version yet: run `nomads-cluster db upgrade`")
        return
    for v in versions:
        click.echo(
            f"{'*' if v.served else ' '} {v.version}  {v.created_at:%Y-%m-%d %H:%M} UTC  "
            f"{v.algorithm.rsplit('.', 1)[-1]}, {counted(v.segments, 'segment')}  "
            f"by {v.filed_by}"
        )
        click.echo(f"    {_churn_line(v.churn)}; {_shadow_line(v.shadow)}")


def _as_json(version: "FiledVersion") -> dict:
    return {
        "version": version.version,
        "created_at": version.created_at.isoformat(),
        "filed_by": version.filed_by,
        "algorithm": version.algorithm,
        "segments": version.segments,
        "served": version.served,
        "churn": None
        if version.churn is None
        else {
            "share": round(version.churn.share, 6),
            "users": version.churn.users,
            "changed": version.churn.changed,
            "measured_against": version.churn.measured_against,
            "measured_at": version.churn.measured_at.isoformat(),
        },
        "shadow": None
        if version.shadow is None
        else {
            "requests": version.shadow.requests,
            "disagreed": version.shadow.disagreed,
            "share": round(version.shadow.share, 6),
            "since": version.shadow.since.isoformat(),
            "shadowing": version.shadow.shadowing,
        },
    }


def _measure_churn(models: "ModelRegistry", version: str) -> "Churn":
    """The candidate's churn over the stored users, with a progress bar, recorded in
    the registry."""
    from ..store.churn import measure_churn

    candidate = models.load(version)
    served = models.served()
    click.echo(
        f"comparing {version} with the segments stored users were last told "
        f"(the fleet serves {served})",
        err=True,
    )
    total = models.store.lifecycle.count_users()
    with click.progressbar(length=total, label="scoring the stored users", file=sys.stderr) as bar:
        report = measure_churn(models.store, candidate, on_chunk=bar.update)
    models.record_churn(version, served or version, report.moves)
    churn = models.churn(version)
    if not report.users:
        click.echo(f"churn of {version}: no stored users, nobody would move")
        return churn
    click.echo(
        f"churn of {version}: {report.share:.1%} of the {report.users} stored users "
        f"would change segment ({report.changed})"
    )
    for segment, (users, stay) in report.staying().items():
        click.echo(f"  segment {segment}: {users} users, {stay} stay ({stay / users:.0%})")
    for (old, new), users in sorted(report.moves.items()):
        if old != new:
            click.echo(f"  segment {old} -> {new}: {users}")
    return churn


def _version(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not VERSION_PATTERN.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a model version (12 hex digits)")
    return value


@click.command()
@click.argument("version", callback=_version)
def churn(version: str) -> None:
    """How many stored users VERSION would move to another segment: every stored user
    re-scored, nothing written but the figures, kept in the registry."""
    with registry() as models:
        _measure_churn(models, version)
        click.echo(f"live: {_shadow_line(models.agreement(version))}")


@click.command()
@click.argument("version", callback=_version)
@click.option(
    "--max-churn",
    type=click.FloatRange(0, 1),
    help="Refuse the model if it would move more than this share of the stored users "
    "(0 to 1; unset: no limit).",
)
def promote(version: str, max_churn: float | None) -> None:
    """Serve VERSION on every instance of the fleet, within seconds and without a
    restart. Prints how many stored users it moves (churn) and how it fared in the
    shadow first."""
    from ..store.engine import StoreUnavailable
    from ..store.registry import operator

    with registry() as models:
        models.load(version)  # an unknown or broken version fails before the churn
        if models.served() == version:
            raise click.ClickException(f"version {version} is served already")
        try:
            churn = _measure_churn(models, version)
        except StoreUnavailable as exc:
            if max_churn is not None:
                raise click.ClickException(
                    f"cannot measure the churn for --max-churn: {exc}"
                ) from None
            click.echo(f"churn not measured: {exc}", err=True)
            churn = None
        click.echo(f"live: {_shadow_line(models.agreement(version))}")
        if max_churn is not None and churn is not None and churn.share > max_churn:
            raise click.ClickException(
                f"refusing to promote {version}: it would move {churn.share:.1%} of the "
                f"stored users, above --max-churn {max_churn:.1%}"
            )
        replaced = models.promote(version, operator())
    click.echo(f"served model: {version} (was {replaced or 'none'}); every instance follows")
    click.echo("stored users keep their segments until `nomads-cluster reassign`")


@click.command()
def rollback() -> None:
    """Serve again the version served before the current one, on every instance."""
    from ..store.registry import operator

    with registry() as models:
        version, replaced = models.rollback(operator())
    click.echo(f"served model: {version} (rolled back from {replaced}); every instance follows")


@click.command()
@click.argument("version", callback=_version, required=False)
@click.option("--off", is_flag=True, help="Stop shadowing (the figures are kept).")
def shadow(version: str | None, off: bool) -> None:
    """Score VERSION beside the served model on every /cluster and batch request of
    every instance, never changing an answer, and count how often they agree."""
    if off == (version is not None):
        raise click.UsageError("give a VERSION to shadow, or --off")
    with registry() as models:
        if off:
            stopped = models.stop_shadow()
            if stopped is None:
                click.echo("no version was shadowed")
                return
            click.echo(f"stopped shadowing {stopped}: {_shadow_line(models.agreement(stopped))}")
            return
        if version == models.served():
            raise click.ClickException(f"{version} is the served version: shadow a candidate")
        models.start_shadow(version)
    click.echo(
        f"shadowing {version} on every instance from now; its agreement shows in "
        "`nomads-cluster models` and `promote`"
    )


@click.command()
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_MODEL_DIR,
    show_default="model/",
)
def heatmap(model_dir: Path) -> None:
    """Draw heatmap.png beside a trained model directory (train draws it for new
    models)."""
    from ..segmentation.model import HEATMAP_FILE

    with training_packages("heatmap"):
        from ..segmentation.training import draw_heatmap

    model = load_model(model_dir)
    heatmap = model_dir / HEATMAP_FILE
    draw_heatmap(model.scorer.components, model.card.segments, heatmap, model.card.algorithm)
    click.echo(f"wrote {heatmap}")
