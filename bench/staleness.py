"""Which deployments' newest results are too old or from another servecat version."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd


def stale_deployments(summary: pd.DataFrame, now: datetime, max_age_days: float,
                      version: str) -> dict[str, str]:
    """deployment -> why it should be measured again (newest result too old, or other version)."""
    if summary.empty:
        return {}
    df = summary[summary["status"] == "ok"].copy()
    if df.empty:
        return {}
    df["measured_at"] = pd.to_datetime(df["measured_at"], utc=True)
    newest = df.sort_values("measured_at").groupby("deployment", observed=True).tail(1)
    cutoff = pd.Timestamp(now) - timedelta(days=max_age_days)
    out = {}
    for row in newest.itertuples():
        if row.measured_at < cutoff:
            out[row.deployment] = f"newest result {row.measured_at:%Y-%m-%d} is older than {max_age_days:g} days"
        elif row.servecat_version != version:
            out[row.deployment] = f"measured by servecat {row.servecat_version}, now {version}"
    return out
