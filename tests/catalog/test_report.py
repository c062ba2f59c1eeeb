import json

from catalog.report import check_complete, check_ranks, check_scores, pareto_vega_lite, top_markdown


def test_top_markdown(catalog_df):
    md = top_markdown(catalog_df, n=5)
    lines = md.splitlines()
    groups = catalog_df.groupby(["model", "profile"]).ngroups
    assert lines[0].startswith("| model | profile | rank") and len(lines) == 2 + 5 * groups


def test_vega_spec_is_inline_json(catalog_df):
    model = catalog_df["model"].iloc[0]
    spec = pareto_vega_lite(catalog_df, model, "server")
    json.dumps(spec, allow_nan=False)
    assert any(v["pareto"] for v in spec["data"]["values"])


def test_checks_pass_on_a_good_catalog_and_catch_bad_ones(catalog_df, summary, profiles):
    assert check_scores(catalog_df) == [] and check_ranks(catalog_df) == []
    assert check_complete(catalog_df, summary, len(profiles)) == []
    bad = catalog_df.copy()
    bad.loc[bad["rank"] == 2, "rank"] = 1
    bad.loc[bad.index[bad["topsis_score"].notna()][0], "topsis_score"] = 1.5
    assert check_ranks(bad) and check_scores(bad)
    assert check_complete(bad.iloc[1:], summary, len(profiles))
