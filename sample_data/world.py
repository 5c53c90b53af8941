"""Everything that holds for the whole fiscal year: calendar, master data, contracts, lookups.

Built once per generated ledger from the seed; month generation reads it but never changes it
(except ``vendor_changes`` and ``extra_vendors``, which anomalies append to).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from sample_data import master as md
from sample_data.workcal import Calendar

LEVELS = ("clerk", "clerk2", "lead", "head", "kaemmerer", "bm")
LEVEL_RANK = {"clerk": 0, "clerk2": 0, "lead": 1, "head": 2, "kaemmerer": 3, "bm": 4,
              "stamm": 0, "rare": 0, "service": 0}


@dataclass
class World:
    seed: int
    year: int
    lines: int
    n_rare: int
    cal: Calendar = field(init=False)
    users: pl.DataFrame = field(init=False)
    vendors: pl.DataFrame = field(init=False)
    contracts: pl.DataFrame = field(init=False)
    cost_centers: pl.DataFrame = field(init=False)
    vendor_changes: list[pl.DataFrame] = field(default_factory=list)
    extra_vendors: list[pl.DataFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 1])
        self.cal = Calendar(self.year, md.STATE)
        scale = int(np.clip(round(np.sqrt(self.lines / 20_000)), 1, 8))
        self.users = md.build_users(rng, scale, self.n_rare)
        n_vendors = int(np.clip(self.lines // 80, 60, 8000))
        vendors = md.build_vendors(rng, n_vendors, self.year)
        self.cost_centers = md.cost_centers_frame()
        self._contracts(rng, vendors, scale)
        self._lookups()

    # --- recurring contracts: rent, energy instalments, leasing, construction instalments ---
    def _contracts(self, rng: np.random.Generator, vendors: pl.DataFrame, scale: int) -> None:
        n_rent = 3 * scale
        start = 7000001 + vendors.height
        landlords = pl.DataFrame({
            "vendor_id": [str(start + i) for i in range(n_rent)],
            "vendor_name": [f"{rng.choice(md.SURNAMES)} {rng.choice(md.LANDLORD.names)} GmbH"
                            for _ in range(n_rent)],
            "category": "vermieter",
            "iban_initial": md.random_ibans(rng, n_rent).tolist(),
            "created_at": [date(self.year - 8, 1, 2)] * n_rent,
            "change_date": pl.Series([None] * n_rent, dtype=pl.Date),
            "iban_changed": pl.Series([None] * n_rent, dtype=pl.String),
            "activity": 0.0,
            "is_person": False,
        })
        self.vendors = pl.concat([vendors, landlords.cast(vendors.schema)])
        old = vendors.filter(pl.col("created_at") < date(self.year, 1, 1))
        rows = []
        rent_cc = ["65100", "40300", "51100", "51300", "33100", "10200"]
        for i in range(n_rent):
            rows.append(("rent", landlords["vendor_id"][i], "523100", rent_cc[i % len(rent_cc)],
                         int(rng.choice([1800, 2400, 3200, 4500, 6750, 9000])) * 100, 1, 12,
                         "Miete"))
        energy = old.filter(pl.col("category") == "energie")["vendor_id"].to_list()
        for i in range(min(len(energy), 4 * scale)):
            cc = ["65100", "65200", "65300", "40100", "40200"][i % 5]
            rows.append(("energy", energy[i], "524100", cc,
                         int(rng.integers(40, 600)) * 1000, 1, 12, "Abschlag"))
        lease = old.filter(pl.col("category").is_in(["it", "kfz"]))["vendor_id"].to_list()
        for i in range(min(len(lease), 4 * scale)):
            acct = "542100" if i % 2 == 0 else "525100"
            cc = "10200" if acct == "542100" else ["37100", "66100", "32200"][i % 3]
            rows.append(("lease", lease[i], acct, cc, int(rng.integers(18000, 160000)), 1, 12,
                         "Leasingrate"))
        build = old.filter(pl.col("category").is_in(["bau", "tiefbau"]))["vendor_id"].to_list()
        for i in range(min(len(build), 3 * scale)):
            m0 = int(rng.integers(2, 8))
            acct = "521100" if i % 2 == 0 else "522100"
            cc = ["65200", "65300"][i % 2] if acct == "521100" else "66100"
            rows.append(("project", build[i], acct, cc,
                         int(rng.choice([18000, 22000, 40000, 60000])) * 100, m0, m0 + 3,
                         "Abschlagsrechnung"))
        self.contracts = pl.DataFrame(rows, orient="row", schema={
            "kind": pl.String, "vendor_id": pl.String, "gl_account": pl.String,
            "cost_center": pl.String, "cents": pl.Int64, "first_month": pl.Int32,
            "last_month": pl.Int32, "text": pl.String}).with_row_index("contract")

    # --- numpy lookups for vectorised user selection ---------------------------------------
    def _lookups(self) -> None:
        u = self.users
        self.depts = np.array(sorted(md.DEPARTMENTS))
        clerks = u.filter(pl.col("level").is_in(["clerk", "clerk2"])).sort("department", "user_id")
        self.clerk_ids = clerks["user_id"].to_numpy()
        self.clerk_limits = (clerks["approval_limit"].to_numpy() * 100).astype(np.int64)
        cd = np.searchsorted(self.depts, clerks["department"].to_numpy())
        self.clerk_off = np.searchsorted(cd, np.arange(len(self.depts)))
        self.clerk_cnt = np.bincount(cd, minlength=len(self.depts))
        lead = dict(u.filter(pl.col("level") == "lead").select("department", "user_id").iter_rows())
        head = dict(u.filter(pl.col("level") == "head").select("department", "user_id").iter_rows())
        self.lead_of = np.array([lead.get(d, "") for d in self.depts])
        self.head_of = np.array([head.get(d, "") for d in self.depts])
        self.kaemmerer = u.filter(pl.col("level") == "kaemmerer")["user_id"][0]
        self.bm = u.filter(pl.col("level") == "bm")["user_id"][0]
        self.stamm = u.filter(pl.col("level") == "stamm")["user_id"][0]
        self.rare_ids = u.filter(pl.col("level") == "rare")["user_id"].to_numpy()
        self.limit_of = dict(zip(u["user_id"].to_list(),
                                 [None if x is None else int(x * 100)
                                  for x in u["approval_limit"].to_list()], strict=True))
        self.dept_of = dict(zip(u["user_id"].to_list(), u["department"].to_list(), strict=True))
        cc = self.cost_centers
        self.cc_ids = cc["cost_center"].to_numpy()
        ccd = np.searchsorted(self.depts, cc["department"].to_numpy())
        self.cc_off = np.searchsorted(ccd, np.arange(len(self.depts)))
        self.cc_cnt = np.bincount(ccd, minlength=len(self.depts))
        self.pay_days = self.cal.workdays[np.isin(self.cal.weekday(self.cal.workdays), [1, 3])]
        v = self.vendors
        self.v_ids = v["vendor_id"].to_numpy()
        self.v_cat = v["category"].to_numpy()
        self.v_created = v["created_at"].to_numpy().astype("datetime64[D]")
        w = v["activity"].to_numpy()
        self.v_p = w / w.sum()

    def dept_index(self, dept: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.depts, dept)

    def pick_cc(self, rng: np.random.Generator, dept: np.ndarray) -> np.ndarray:
        di = self.dept_index(dept)
        return self.cc_ids[self.cc_off[di] + (rng.random(len(di)) * self.cc_cnt[di]).astype(int)]

    def pick_clerk(self, rng: np.random.Generator,
                   dept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random clerk of each Amt, with the clerk's limit in cents."""
        di = self.dept_index(dept)
        cnt = np.maximum(self.clerk_cnt[di], 1)
        i = self.clerk_off[di] + (rng.random(len(di)) * cnt).astype(int)
        i = np.clip(i, 0, len(self.clerk_ids) - 1)
        return self.clerk_ids[i], self.clerk_limits[i]

    def enterer(self, rng: np.random.Generator, dept: np.ndarray,
                cents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Who keys the journal: a clerk of the Amt, or whoever's limit covers the amount.

        Returns user ids and their rank (0 clerk, 1 lead, 2 head, 3 Kämmerer, 4 Bürgermeisterin).
        """
        di = self.dept_index(dept)
        clerk, limit = self.pick_clerk(rng, dept)
        user = np.select(
            [cents <= limit, cents <= 5_000_000, cents <= 25_000_000, cents <= 100_000_000],
            [clerk, self.lead_of[di], self.head_of[di], np.full(len(di), self.kaemmerer)],
            self.bm)
        rank = np.select([cents <= limit, cents <= 5_000_000, cents <= 25_000_000,
                          cents <= 100_000_000], [0, 1, 2, 3], 4)
        return user, rank

    def approver(self, dept: np.ndarray, cents: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Four eyes: the next level up whose limit covers the amount."""
        di = self.dept_index(dept)
        return np.select(
            [(rank <= 0) & (cents <= 5_000_000), (rank <= 1) & (cents <= 25_000_000),
             (rank <= 2) & (cents <= 100_000_000)],
            [self.lead_of[di], self.head_of[di], np.full(len(di), self.kaemmerer)], self.bm)

    def iban_at(self, vendor: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The IBAN on file for each vendor at each date (honours the legitimate changes)."""
        v = self.vendors
        idx = np.searchsorted(self.v_ids, vendor)
        first = v["iban_initial"].to_numpy()[idx]
        changed = v["iban_changed"].to_numpy()[idx]
        cdate = v["change_date"].to_numpy().astype("datetime64[D]")[idx]
        use_new = ~np.isnat(cdate) & (day.astype("datetime64[D]") >= cdate)
        return np.where(use_new, changed, first)

    def legit_changes(self) -> pl.DataFrame:
        """Change-log rows for the vendors that legitimately moved bank in the year."""
        v = self.vendors.filter(pl.col("change_date").is_not_null())
        rng = np.random.default_rng([self.seed, 2])
        secs = rng.integers(8 * 3600, 16 * 3600, v.height)
        day = self.cal.prev_workday(v["change_date"].to_numpy().astype("datetime64[D]") - 1)
        return pl.DataFrame({
            "vendor_id": v["vendor_id"],
            "changed_at": pl.Series((day.astype("datetime64[us]")
                                     + (secs * 1_000_000).astype("timedelta64[us]"))),
            "field": "bank_account",
            "old_value": v["iban_initial"],
            "new_value": v["iban_changed"],
            "changed_by": self.stamm,
        })
