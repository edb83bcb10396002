"""The model card (model.json): what a model is, what it was trained on, and what its
segments mean. Written by training, validated when a model is loaded, served at /version."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .scoring import MAX_COMPONENTS, MIN_COMPONENTS


class InterestWeight(BaseModel):
    interest: str = Field(examples=["surf"])
    weight: float = Field(description="The interest's value in the segment's NMF component.")


class SegmentSummary(BaseModel):
    """What a segment means, read off the model's component."""

    segment: int = Field(ge=1)
    label: str = Field(description="Its top interests, generated from the model.")
    top_interests: list[InterestWeight] = Field(description="Heaviest first.")
    share: float | None = Field(
        ge=0,
        le=1,
        description="Its share of the training users; null for a model imported without "
        "its training data.",
    )


class TrainingData(BaseModel):
    file: str
    sha256: str
    rows: int


class SegmentMatch(BaseModel):
    """How a segment of a retrained model got its number."""

    segment: int = Field(ge=1)
    previous_segment: int | None = Field(
        description="The previous model's segment it continues, or null: a new number."
    )
    similarity: float | None = Field(
        description="Cosine similarity of the two interest profiles (components)."
    )


class Numbering(BaseModel):
    """Segment numbers kept from a previous model (``train --previous``)."""

    previous_version: str
    threshold: float = Field(description="The similarity under which a segment is new.")
    matches: list[SegmentMatch]
    retired: list[int] = Field(description="The previous model's segments matched by none.")


# Warm start: how far retrained segments may move from the previous ones, as the weight
# of ||H - H_prev||² per training user: chosen on bootstrap resamples of the survey as
# the weight that keeps most users in their segment for a small loss of fit
# (bench/warm_start.py prints both for each weight; docs/model.md).
DEFAULT_ANCHOR = 0.02


class WarmStart(BaseModel):
    """A retrain kept near the previous model (``train --warm-start``), against a cold
    fit of the same data."""

    previous_version: str
    anchor: float = Field(description="Weight of ||H - H_prev||² per training user.")
    kept_training_users: float = Field(
        description="Training users in the segment the previous model gives them."
    )
    kept_training_users_cold: float = Field(description="The same for a cold fit.")
    reconstruction_error_cold: float
    error_vs_cold: float = Field(description="reconstruction_error / the cold fit's - 1.")


class ModelCard(BaseModel):
    """What the model is, what it was trained on, and what its segments mean."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str = Field(description="The first 12 hex digits of model_sha256.")
    algorithm: str
    parameters: dict[str, Any]
    feature_columns: list[str] = Field(description="The 26 interests, in the model's order.")
    n_components: int = Field(ge=MIN_COMPONENTS, le=MAX_COMPONENTS)
    sklearn_version: str
    model_sha256: str = Field(pattern="^[0-9a-f]{64}$")
    training_data: TrainingData | None = Field(
        description="Null for a model imported without its training data."
    )
    reconstruction_error: float
    n_iter: int
    score_variance: float | None = Field(
        default=None,
        gt=0,
        description="k-means only: the variance of the training users around their "
        "centroids, which scales the scores (responsibilities).",
    )
    segments: list[SegmentSummary] = Field(description="In the order of the components.")
    highest_segment_number: int | None = Field(
        default=None,
        description="The highest number any model of this line has used; a new segment "
        "gets the next one, so that no number ever changes meaning.",
    )
    numbering: Numbering | None = None
    warm_start: WarmStart | None = None

    @model_validator(mode="after")
    def _one_segment_per_component(self) -> "ModelCard":
        numbers = [segment.segment for segment in self.segments]
        if len(numbers) != self.n_components or len(set(numbers)) != len(numbers):
            raise ValueError("segments must number each component once, without repeats")
        return self
