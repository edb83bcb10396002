"""The fast scorer against scikit-learn: same scores, same segments."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.decomposition import non_negative_factorization

from nomads_cluster.segmentation.scoring import (
    SegmentScorer,
    assign_segments,
    coordinate_descent_scores,
)

binary_users = arrays(
    np.float64, st.tuples(st.integers(1, 20), st.just(26)), elements=st.sampled_from([0.0, 1.0])
)


@pytest.fixture(scope="module")
def scorer(sklearn_model):
    return SegmentScorer(sklearn_model.components_)


@settings(max_examples=300, deadline=None)
@given(users=binary_users)
def test_segments_equal_sklearn_transform_one_user_at_a_time(users, scorer, sklearn_model):
    # The original scored one user per request: compare row by row, as it called transform.
    expected = np.vstack([sklearn_model.transform(row[None, :]) for row in users])
    actual = scorer.scores(users)
    np.testing.assert_array_equal(assign_segments(actual), expected.argmax(axis=1) + 1)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def at_least_a_millionth(value: float) -> float:
    return value if value >= 1e-6 else 0.0


@settings(max_examples=100, deadline=None)
@given(
    # Values 0 or at least 1e-6: at tiny values such as 1e-110 the scores reach
    # 1e109 and the two best supports differ by less than rounding at that scale.
    components=arrays(
        np.float64,
        st.tuples(st.integers(2, 6), st.just(10)),
        elements=st.floats(0, 3).map(at_least_a_millionth),
    ),
    users=arrays(
        np.float64,
        st.tuples(st.integers(1, 5), st.just(10)),
        elements=st.floats(0, 1).map(at_least_a_millionth),
    ),
)
def test_scores_are_the_exact_nnls_optimum(components, users):
    # On any non-negative data, not only the survey's model: converge scikit-learn's
    # coordinate descent much further than transform does, and meet it.
    # Well-conditioned components, where coordinate descent converges in few iterations.
    assume(np.linalg.cond(components @ components.T) < 100)
    expected, _, _ = non_negative_factorization(
        users,
        H=components,
        n_components=len(components),
        update_H=False,
        solver="cd",
        init="custom",
        tol=1e-12,
        max_iter=20000,
    )
    np.testing.assert_allclose(SegmentScorer(components).optimal_scores(users), expected, atol=1e-6)


def sklearn_per_user(sklearn_model, users: np.ndarray) -> np.ndarray:
    return np.vstack([sklearn_model.transform(user[None, :]) for user in users])


@settings(max_examples=100, deadline=None)
@given(users=binary_users)
def test_descent_replica_equals_sklearn_transform(users, sklearn_model):
    expected = sklearn_per_user(sklearn_model, users)
    actual = coordinate_descent_scores(users, sklearn_model.components_)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)


def test_near_ties_get_sklearns_segment(scorer, sklearn_model):
    # Among many random users, the ones whose best two segments are nearly tied: there
    # the optimum and scikit-learn's stopped descent can disagree, and the scorer must
    # side with scikit-learn.
    rng = np.random.default_rng(7)
    users = (rng.random((1 << 19, 26)) < 0.5).astype(np.float64)
    optimal = np.sort(scorer.optimal_scores(users), axis=1)
    closest = users[np.argsort((optimal[:, -1] - optimal[:, -2]) / optimal[:, -1])[:60]]
    expected = sklearn_per_user(sklearn_model, closest).argmax(axis=1)
    assert (scorer.optimal_scores(closest).argmax(axis=1) != expected).any()  # ties that matter
    np.testing.assert_array_equal(scorer.scores(closest).argmax(axis=1), expected)
    one_by_one = [np.argmax(scorer.score_user(user)) for user in closest]
    np.testing.assert_array_equal(one_by_one, expected)


@settings(max_examples=300, deadline=None)
@given(users=binary_users)
def test_one_user_path_equals_the_batch_path(users, scorer):
    batch = scorer.scores(users)
    one_by_one = np.array([scorer.score_user(user) for user in users])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-12, atol=1e-15)


@settings(max_examples=200, deadline=None)
@given(users=binary_users)
def test_contributions_add_up_to_the_optimal_scores(users, scorer):
    optimal = scorer.optimal_scores(users)
    for user, expected in zip(users, optimal, strict=True):
        for segment in range(scorer.n_components):
            parts = np.array(scorer.contributions(user, segment))
            assert not parts[user == 0].any()  # only chosen interests contribute
            assert parts.sum() == pytest.approx(expected[segment], abs=1e-12)


def test_no_interest_scores_zero_and_lands_in_segment_1(scorer):
    scores = scorer.scores(np.zeros((1, 26)))
    assert not scores.any()
    assert assign_segments(scores).tolist() == [1]
    assert scorer.score_user(np.zeros(26)) == [0.0] * 4


def test_dependent_components_are_refused():
    with pytest.raises(ValueError, match="linearly dependent"):
        SegmentScorer(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0]]))


def test_one_component_is_refused():
    with pytest.raises(ValueError, match="takes 2 to 10"):
        SegmentScorer(np.ones((1, 3)))
