"""benchmarks.fidelity_vs_data: one row per (logged users, model setting), fitted by the
pipeline's code, judged against the world's truth; bad settings are refused by name."""

from __future__ import annotations

import pytest

from benchmarks import fidelity_vs_data


def test_rows_per_users_and_setting_with_gaps_to_the_segment_oracle():
    out = fidelity_vs_data.main(["--users", "300", "600", "--set", "hidden_dim=8,embed_dim=4",
                                 "--set", "hidden_dim=16", "--overrides", "experiment=smoke", "--repeat-users", "50"])
    rows = out["rows"]
    assert [(r["users"], r["setting"]) for r in rows] == [
        (300, {"hidden_dim": 8, "embed_dim": 4}), (300, {"hidden_dim": 16}),
        (600, {"hidden_dim": 8, "embed_dim": 4}), (600, {"hidden_dim": 16})]
    assert rows[0]["train_users"] == rows[1]["train_users"] < rows[2]["train_users"]  # same logs per size
    for r in rows:
        assert r["click_gap"] == pytest.approx(r["click_auc"] - r["segment_oracle_click_auc"])
        assert 0.5 < r["segment_oracle_click_auc"] < 1 and 0 <= r["click_ece"] < 0.2
    assert rows[0]["click_auc"] != rows[1]["click_auc"]  # the setting reached the fit
    assert all(len(r["repeat_click_ratio"]) == 24 and r["repeat_click_ratio_median"] > 0 for r in rows)  # 24 offers


def test_unknown_setting_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        fidelity_vs_data.main(["--users", "300", "--set", "hiden_dim=8"])
    assert "hiden_dim" in capsys.readouterr().err
