"""The naive baseline: what a data scientist writes in an afternoon.

pandas reads the CSV, a handful of one-hot and frequency features, scikit-learn's
IsolationForest over all lines, three pandas rules (duplicate payments, weekend postings, round
amounts); journals are ranked by rule count then forest score. Scored with the same metrics as
Belegwacht, on the same file. Deliberately not optimised: it is the yardstick, not a competitor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest


def naive(csv_path: Path, out: Path) -> int:
    df = pd.read_csv(csv_path, dtype={"Journal_ID": str, "GL_Account_Number": str,
                                      "Entered_By": str, "Supplier_Account_ID": str,
                                      "Reference_Number": str, "Entered_Time": str})
    sign = np.where(df["Amount_Credit_Debit_Indicator"].isin(["C", "H"]), -1.0, 1.0)
    df["signed"] = df["Amount"].astype(float) * sign
    df["posting"] = pd.to_datetime(df["Effective_Date"].astype(str), format="%Y%m%d",
                                   errors="coerce")
    features = pd.DataFrame({"log_amount": np.log1p(df["signed"].abs()),
                             "weekday": df["posting"].dt.weekday.fillna(0)})
    for col in ("GL_Account_Number", "Entered_By"):
        features[col + "_freq"] = df[col].map(df[col].value_counts(normalize=True)).fillna(0)
    top_accounts = df["GL_Account_Number"].value_counts().index[:20]
    onehot = pd.get_dummies(df["GL_Account_Number"].where(
        df["GL_Account_Number"].isin(top_accounts), "other"), prefix="acct")
    features = pd.concat([features, onehot.astype(float)], axis=1)
    forest = IsolationForest(n_estimators=100, random_state=0).fit(features)
    df["forest"] = -forest.score_samples(features)

    rule_hits = pd.Series(0, index=df.index)
    if {"Supplier_Account_ID", "Reference_Number"} <= set(df.columns):
        rule_hits += df.duplicated(["Supplier_Account_ID", "Reference_Number", "signed"],
                                   keep="first") & df["Supplier_Account_ID"].notna()
    rule_hits += df["posting"].dt.weekday >= 5
    rule_hits += (df["signed"].abs() >= 1000) & (df["signed"].abs() % 1000 == 0)
    df["rules"] = rule_hits

    ranking = (df.groupby(["Fiscal_Year", "Journal_ID"])
               .agg(rules=("rules", "max"), forest=("forest", "max")).reset_index()
               .sort_values(["rules", "forest"], ascending=False))
    ranking["rank"] = np.arange(1, len(ranking) + 1)
    ranking.rename(columns={"Fiscal_Year": "fiscal_year", "Journal_ID": "journal_id"}) \
        [["fiscal_year", "journal_id", "rank"]].to_parquet(out)
    return len(df)


if __name__ == "__main__":
    print(naive(Path(sys.argv[1]), Path(sys.argv[2])))
