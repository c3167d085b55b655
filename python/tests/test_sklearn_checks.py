"""scikit-learn's estimator checks, with every check that cannot apply listed and explained."""

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from varsparse import VarSparseCoder, VarSparseDictionaryLearning

# Small and quick: the checks fit dozens of times on arrays of a few features.
LEARNER = VarSparseDictionaryLearning(n_components=4, max_epochs=2, batch_size=10, eta=0.02,
                                      random_state=0)

# A VarSparseCoder's dictionary fixes the number of features, while the checks draw data with
# 1 to 20 features; the checks that use data of some other width than the dictionary's cannot
# apply (scikit-learn's own SparseCoder is excluded from them for the same reason).
_FIXED_WIDTH = (
    "the dictionary is a constructor parameter and fixes n_features; this check fits data "
    "of another width")
CODER_XFAIL = {name: _FIXED_WIDTH for name in [
    "check_positive_only_tag_during_fit",
    "check_dtype_object",
    "check_estimators_nan_inf",
    "check_fit_score_takes_y",
    "check_estimators_fit_returns_self",
    "check_pipeline_consistency",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_fit2d_1sample",
    "check_fit2d_1feature",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
    "check_fit2d_predict1d",
    "check_readonly_memmap_input",
    "check_n_features_in_after_fitting",
    "check_transformer_n_iter",
    "check_set_output_transform",
    "check_global_output_transform_pandas",
    "check_global_set_output_transform_polars",
    "check_set_output_transform_pandas",
    "check_set_output_transform_polars",
]}


def _expected_failed(estimator):
    if isinstance(estimator, VarSparseCoder):
        return CODER_XFAIL
    return {}


@parametrize_with_checks(
    [LEARNER, VarSparseCoder(np.random.default_rng(0).standard_normal((4, 5)), lam=0.01)],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
