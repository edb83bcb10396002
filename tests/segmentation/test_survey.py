import pytest

from nomads_cluster.segmentation.interests import INTEREST_KEYS
from nomads_cluster.segmentation.survey import SurveyFormatError, read_survey

HEADER = "Timestamp,sports,culture,food,leisure\n"


def test_real_survey_has_115_answers_of_26_interests(survey_path):
    survey = read_survey(survey_path)
    assert survey.features.shape == (115, 26)
    assert set(survey.features.ravel()) == {0.0, 1.0}
    assert len(survey.sha256) == 64


def test_cells_become_one_hot_columns(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(HEADER + '10/20/2021 17:21:42,"Surf, Voley",,Burgers,"Drinks at night"\n')
    features = read_survey(path).features
    chosen = {INTEREST_KEYS[i] for i in features[0].nonzero()[0]}
    assert chosen == {"surf", "volley", "burguers", "drinks"}


def test_unknown_label_names_row_and_label(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(HEADER + "t,Surf,,,\n" + "t,Surf,Opera,,\n")
    with pytest.raises(SurveyFormatError, match=r"row 2 \(line 3\).*'Opera'"):
        read_survey(path)
