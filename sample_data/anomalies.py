"""Labelled anomalies, one scenario per journal, each only as visible as it would be in reality.

Two phases per month: ``before_payments`` changes or adds invoices and G/L journals (so the
payment run pays what was injected), ``after_payments`` tampers with payments. Attribute
anomalies (weekend, night, self-approval, ...) modify a normal journal in place; structural ones
(duplicates, splits, new vendors, ...) add journals. Counts per scenario and month come from
``allocate`` so that the whole year has roughly 0.5-1 % anomalous journals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from detect.schema import MASTER_SCHEMAS

from sample_data import frames as fr
from sample_data import master as md
from sample_data.ledger import MONTH_WEIGHT, MonthGen
from sample_data.world import World

CHANGE_SCHEMA = MASTER_SCHEMAS["vendor_changes"]

SCENARIOS: tuple[str, ...] = (
    "duplicate_payment", "near_duplicate_payment", "split_invoice", "weekend_posting",
    "night_posting", "holiday_posting", "self_approval", "above_approval_limit",
    "just_below_approval_limit", "just_below_procurement_threshold", "rare_account_pair",
    "round_amount_new_vendor", "new_vendor_payment", "one_off_bank_account",
    "vendor_bank_change", "backdated", "forward_posting", "closed_period_posting",
    "amount_outlier", "outside_usual_accounts", "service_user_manual", "suspicious_description",
    "manual_cash", "repeated_same_amount", "reversal_after_period_end", "unbalanced_journal",
    "rare_user", "ends_in_nines",
)
PROCUREMENT = (1000, 3000, 25000, 100000)
"""Vergabe-Wertgrenzen of ``detect.config.Thresholds`` (EUR)."""
SUSPICIOUS = np.array(["Privatanteil Ausgleich", "Geschenk Mitarbeiter", "Barauslage ohne Beleg",
                       "diverse Kosten sonstig", "Bonus Sonderzahlung", "Nachtrag ohne Beleg",
                       "Korrektur sonstige diverse", "Test Buchung"])
# expense (debit) against revenue (credit) never happens in normal data (internal allocations
# use 581100/481100 only); plus a few asset/liability oddities. Many distinct pairs, so that
# even a large ledger uses each one only a few times (a pair used often is no longer rare).
_EXPENSES = ["521100", "522100", "523100", "524100", "525100", "527100", "529100", "533100",
             "541100", "542100", "544100"]
_REVENUES = ["401200", "401300", "431100", "432100", "441100", "456100"]
RARE_PAIRS = np.array([(d, c) for d in _EXPENSES for c in _REVENUES]
                      + [("081100", md.CASH), ("533100", md.CASH), (md.ACCRUAL, "431100"),
                         (md.ACCRUAL, md.CASH)])
SMALL_ACCOUNTS = ["541100", "529100", "525100"]  # tight amount ranges (542100 mixes IT)
FAR_CATEGORIES = {"jugendhilfe": ["32", "37", "66", "33"], "lehrmittel": ["32", "37", "66", "51"],
                  "tiefbau": ["33", "40", "51", "10"], "versicherung": ["33", "40", "37", "51"]}


def allocate(seed: int, lines: int) -> dict[str, np.ndarray]:
    """Instances of each scenario per month (index 0 = January)."""
    rng = np.random.default_rng([seed, 3])
    journals = lines / 2.1
    per = max(2, int(round(0.007 * journals / 32)))
    out = {}
    for s in SCENARIOS:
        w = MONTH_WEIGHT.copy()
        if s == "holiday_posting":
            w = w * np.isin(np.arange(1, 13), [1, 4, 5, 6, 10, 12])
        if s == "reversal_after_period_end":
            w[0] = 0
        if s == "closed_period_posting":
            w[11] = 0
        out[s] = rng.multinomial(per, w / w.sum())
    return out


@dataclass
class Month:
    """The month under construction, shared by both injection phases."""

    gen: MonthGen
    h: pl.DataFrame
    l: pl.DataFrame
    counts: dict[str, int]
    pool: pl.DataFrame | None = None
    """Earlier months' G/L journals (headers joined to lines, with final journal_id)."""
    skip_payment: list[int] = field(default_factory=list)
    """Invoice keys that an anomaly pays itself (not the payment run)."""

    @property
    def w(self) -> World:
        return self.gen.w

    @property
    def rng(self) -> np.random.Generator:
        return self.gen.rng

    def add(self, h: pl.DataFrame, l: pl.DataFrame, scenario: str | None) -> None:
        if scenario is not None:
            h = h.with_columns(scenario=pl.lit(scenario))
        self.h = pl.concat([self.h, h])
        self.l = pl.concat([self.l, l])

    def pick(self, k: int, cond: pl.Expr, two_lines: bool = False) -> pl.DataFrame:
        """``k`` unlabelled journals matching ``cond`` (fewer if there are not enough)."""
        cand = self.h.filter(cond & pl.col("scenario").is_null())
        if two_lines:
            n = self.l.group_by("jk").len()
            cand = cand.join(n.filter(pl.col("len") == 2), on="jk", how="semi")
        k = min(k, cand.height)
        # numpy draws, not DataFrame.sample: the same seed must pick the same journals on every
        # Polars version (the committed demo is compared byte for byte)
        idx = np.sort(self.rng.choice(cand.height, k, replace=False))
        return cand.sort("jk")[idx]

    def update(self, changed: pl.DataFrame, scenario: str) -> None:
        changed = changed.with_columns(scenario=pl.lit(scenario))
        self.h = self.h.update(changed, on="jk", include_nulls=False)

    def set_cents(self, jk: np.ndarray, cents: np.ndarray) -> None:
        """New amount for 2-line journals (debit +, credit -)."""
        m = pl.DataFrame({"jk": jk, "new": cents})
        self.l = (self.l.join(m, on="jk", how="left")
                  .with_columns(cents=pl.when(pl.col("new").is_null()).then(pl.col("cents"))
                                .when(pl.col("cents") > 0).then(pl.col("new"))
                                .otherwise(-pl.col("new")))
                  .drop("new"))


def _days(x: pl.Series) -> np.ndarray:
    return x.to_numpy().astype("datetime64[D]")


def _people(m: Month) -> pl.Expr:
    return pl.col("kind").is_in(["invoice", "gl"]) & (pl.col("source") == "manual")


# --- phase 1: invoices and G/L journals -----------------------------------------------------

def before_payments(m: Month) -> None:
    for name in ("split_invoice", "repeated_same_amount", "just_below_procurement_threshold",
                 "round_amount_new_vendor", "new_vendor_payment", "rare_user",
                 "outside_usual_accounts", "rare_account_pair", "manual_cash",
                 "amount_outlier", "above_approval_limit", "just_below_approval_limit",
                 "ends_in_nines", "weekend_posting", "holiday_posting", "night_posting",
                 "self_approval", "suspicious_description", "service_user_manual", "backdated",
                 "forward_posting", "closed_period_posting", "unbalanced_journal",
                 "reversal_after_period_end"):
        k = m.counts.get(name, 0)
        if k:
            globals()[f"_{name}"](m, k)


def after_payments(m: Month) -> None:
    for name in ("duplicate_payment", "near_duplicate_payment", "one_off_bank_account",
                 "vendor_bank_change"):
        k = m.counts.get(name, 0)
        if k:
            globals()[f"_{name}"](m, k)


def _vendors_of(m: Month, cats: list[str], n: int) -> np.ndarray:
    w = m.w
    ok = np.isin(w.v_cat, cats) & (w.v_created < np.datetime64(f"{w.year}-01-01"))
    return m.rng.choice(w.v_ids[ok], n)


def _split_invoice(m: Month, k: int) -> None:
    rng, gen = m.rng, m.gen
    for _ in range(k):  # k is a handful per month; each group is built vectorised
        parts = int(rng.choice([2, 3], p=[0.6, 0.4]))
        t = int(rng.choice([3000, 25000, 100000], p=[0.45, 0.45, 0.10]))
        lo, hi = (0.55, 0.95) if parts == 2 else (0.4, 0.9)
        cents = (t * rng.uniform(lo, hi, parts) * 100).astype(np.int64)
        vendor = np.repeat(_vendors_of(m, ["bau", "beratung", "it", "einrichtung"], 1), parts)
        d0 = rng.choice(gen.workdays[:-4])
        post = m.w.cal.next_workday(np.full(parts, d0), np.sort(rng.integers(0, 4, parts)))
        base = int(rng.integers(10**5, 10**6 - 5))
        ref = np.array([f"RE{base + i}" for i in range(parts)])
        h, l = gen.invoices(parts, vendor=vendor, cents=cents, post=post, reference=ref,
                            split_share=0.0)
        # one clerk, one cost center, one account for all parts
        first = l.filter(pl.col("line_no") == 1).row(0, named=True)
        l = l.with_columns(
            cost_center=pl.when(pl.col("line_no") == 1).then(pl.lit(first["cost_center"]))
            .otherwise(pl.col("cost_center")),
            gl_account=pl.when(pl.col("line_no") == 1).then(pl.lit(first["gl_account"]))
            .otherwise(pl.col("gl_account")))
        top = h.sort("jk").row(int(np.argmax(cents)), named=True)
        h = h.with_columns(entered_by=pl.lit(top["entered_by"]),
                           approved_by=pl.lit(top["approved_by"]))
        m.add(h, l, "split_invoice")


def _repeated_same_amount(m: Month, k: int) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    for _ in range(k):
        r = int(rng.integers(3, 5))
        dept = str(rng.choice(["65", "40", "37", "66"]))
        cat = {"65": "bau", "40": "lehrmittel", "37": "kfz", "66": "tiefbau"}[dept]
        clerk, limit = w.pick_clerk(rng, np.array([dept]))
        cents = np.full(r, int(rng.uniform(0.2, 0.9) * limit[0]))
        d0 = rng.choice(gen.workdays[:-8])
        post = w.cal.next_workday(np.full(r, d0), np.sort(rng.choice(8, r, replace=False)))
        vendor = _vendors_of(m, [cat], r)
        h, l = gen.invoices(r, vendor=vendor, cents=cents, post=post, split_share=0.0,
                            dept=np.full(r, dept))
        h = h.with_columns(entered_by=pl.lit(clerk[0]),
                           approved_by=pl.lit(w.lead_of[w.dept_index(np.array([dept]))][0]))
        m.add(h, l, "repeated_same_amount")


def _just_below_procurement_threshold(m: Month, k: int) -> None:
    rng = m.rng
    t = rng.choice(np.array([3000, 25000, 100000]), k, p=[0.4, 0.45, 0.15])
    cents = (t * rng.uniform(0.975, 0.9995, k) * 100).astype(np.int64)
    cents = np.where(rng.random(k) < 0.5, cents // 100 * 100, cents)
    vendor = _vendors_of(m, ["bau", "beratung", "it", "tiefbau"], k)
    h, l = m.gen.invoices(k, vendor=vendor, cents=cents, split_share=0.0)
    m.add(h, l, "just_below_procurement_threshold")


def _new_vendors(m: Month, k: int, cats: list[str], created: np.ndarray) -> np.ndarray:
    """Create ``k`` vendors (with fresh IBANs) that normal data never books."""
    w, rng = m.w, m.rng
    start = int(w.v_ids.astype(np.int64).max()) + 1
    ids = np.array([str(start + i) for i in range(k)])
    cat = rng.choice(np.array(cats), k)
    name = np.char.add(np.char.add(rng.choice(np.array(md.SURNAMES), k), " "),
                       rng.choice(np.array(["Consulting", "Handel", "Service", "Projekt"]), k))
    v = pl.DataFrame({
        "vendor_id": ids, "vendor_name": np.char.add(name, " GmbH"), "category": cat,
        "iban_initial": md.random_ibans(rng, k), "created_at": pl.Series(created).cast(pl.Date),
        "change_date": pl.Series([None] * k, dtype=pl.Date),
        "iban_changed": pl.Series([None] * k, dtype=pl.String), "activity": 0.0,
        "is_person": False}).cast(w.vendors.schema)
    w.vendors = pl.concat([w.vendors, v])
    w._lookups()
    return ids


def _round_amount_new_vendor(m: Month, k: int) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    post = rng.choice(gen.workdays[3:], k)
    created = w.cal.prev_workday(post - rng.integers(1, 20, k))
    ids = _new_vendors(m, k, ["beratung", "bau", "it"], created)
    cents = rng.choice(np.array([2000, 2500, 3000, 4500, 5000, 7500, 8000, 9500, 12000, 15000,
                                 20000]), k).astype(np.int64) * 100
    h, l = gen.invoices(k, vendor=ids, cents=cents, post=post, split_share=0.0,
                        check_age=False)
    m.add(h, l, "round_amount_new_vendor")


def _new_vendor_payment(m: Month, k: int) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    post = rng.choice(gen.workdays[2:-4], k)
    created = w.cal.prev_workday(post - rng.integers(0, 4, k))
    ids = _new_vendors(m, k, ["beratung", "bau", "it"], created)
    h, l = gen.invoices(k, vendor=ids, post=post, split_share=0.0, check_age=False)
    m.add(h, l, None)
    m.skip_payment.extend(h["jk"].to_list())
    pay = w.cal.next_workday(post, rng.integers(1, 4, k))
    cents = -l.filter(pl.col("anchor"))["cents"].to_numpy()
    order = np.argsort(l.filter(pl.col("anchor"))["jk"].to_numpy())
    cents = cents[order]
    ref = h.sort("jk")["reference"].to_numpy().astype(str)
    clerk, _ = w.pick_clerk(rng, np.full(k, "20"))
    jk = gen.keys(k)
    ph = fr.headers(k, jk=jk, kind="payment", posting_date=pay, document_date=pay,
                    entered_at=fr.at_seconds(pay, fr.office_seconds(rng, k)), entered_by=clerk,
                    approved_by=w.lead_of[w.dept_index(np.array(["20"]))][0], source="manual",
                    document_type="KZ", reference=ref,
                    header_description=np.char.add("Eilzahlung ", ref))
    bank = w.iban_at(np.sort(ids), pay)
    pl_ = fr.two_line(jk, md.AP, md.BANK, cents, dr_vendor=np.sort(ids), cr_vendor=np.sort(ids),
                      cr_bank=bank, dr_text=np.char.add("Zahlung ", ref),
                      cr_text=np.char.add("Zahlung ", ref))
    m.add(ph, pl_, "new_vendor_payment")


def _rare_user(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    used = m.counts.get("_rare_used", 0)
    users = w.rare_ids[np.arange(used, used + k) % max(len(w.rare_ids), 1)]
    m.counts["_rare_used"] = used + k
    cents = fr.round_cents(rng, np.full(k, 900.0), np.full(k, 0.6))
    h, l = m.gen.invoices(k, cents=np.minimum(cents, 900_000), split_share=0.0)
    h = h.with_columns(entered_by=pl.Series(users))
    m.add(h, l, "rare_user")


def _outside_usual_accounts(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    cats = rng.choice(np.array(list(FAR_CATEGORIES)), k)
    vendor = np.array([_vendors_of(m, [c], 1)[0] for c in cats])
    h, l = m.gen.invoices(k, vendor=vendor, split_share=0.0)
    l = l.with_columns(cents=pl.col("cents").clip(-450_000, 450_000))
    other = np.array([rng.choice(FAR_CATEGORIES[c]) for c in cats])
    clerk, _ = w.pick_clerk(rng, other)
    h = h.sort("jk").with_columns(entered_by=pl.Series(clerk),
                                  approved_by=pl.Series(w.lead_of[w.dept_index(other)]))
    m.add(h, l, "outside_usual_accounts")


def _rare_account_pair(m: Month, k: int) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    pair = RARE_PAIRS[rng.integers(0, len(RARE_PAIRS), k)]
    cents = (rng.uniform(800, 9000, k) * 100).astype(np.int64)
    post, entered = gen.people_dates(k)
    user, rank = w.enterer(rng, np.full(k, "20"), cents)
    jk = gen.keys(k)
    text = np.full(k, "Verrechnung")
    h = fr.headers(k, jk=jk, kind="gl", posting_date=post, document_date=post,
                   entered_at=entered, entered_by=user,
                   approved_by=w.approver(np.full(k, "20"), cents, rank), source="manual",
                   document_type="SA", reference=np.char.add("SA", rng.integers(10**5, 10**6, k)
                                                            .astype(str)),
                   header_description=text)
    l = fr.two_line(jk, pair[:, 0], pair[:, 1], cents, dr_cc="20100", dr_text=text, cr_text=text)
    m.add(h, l, "rare_account_pair")


def _manual_cash(m: Month, k: int) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    kind = rng.random(k) < 0.6
    cents = np.where(kind, (rng.uniform(1200, 4900, k) * 100).astype(np.int64),
                     rng.integers(20, 90, k).astype(np.int64) * 10000)
    dept = rng.choice(np.array(["10", "65", "20"]), k)
    clerk, _ = w.pick_clerk(rng, dept)
    post, entered = gen.people_dates(k)
    jk = gen.keys(k)
    text = np.where(kind, "Barzahlung Rechnung", "Barabhebung Kasse")
    h = fr.headers(k, jk=jk, kind="cash", posting_date=post, document_date=post,
                   entered_at=entered, entered_by=clerk, approved_by=w.lead_of[w.dept_index(dept)],
                   source="manual", document_type="KA",
                   reference=np.char.add("Q", rng.integers(10**5, 10**6, k).astype(str)),
                   header_description=text)
    l = fr.two_line(jk, np.where(kind, "527100", md.CASH), np.where(kind, md.CASH, md.BANK), cents,
                    dr_cc=np.where(kind, w.pick_cc(rng, dept), None), dr_text=text, cr_text=text)
    m.add(h, l, "manual_cash")


def _amount_outlier(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    small = m.l.filter(pl.col("gl_account").is_in(SMALL_ACCOUNTS) & (pl.col("line_no") == 1))
    j = m.pick(k, pl.col("kind").eq("invoice") & pl.col("jk").is_in(small["jk"].implode()), True)
    if j.height == 0:
        return
    old = m.l.filter(pl.col("jk").is_in(j["jk"].implode()) & (pl.col("cents") > 0)).sort("jk")
    # far above what the account usually carries (its median this month), not just above
    # this one invoice: a tenfold typo on a tiny invoice is still an ordinary amount
    med = (m.l.filter(pl.col("cents") > 0).group_by("gl_account")
           .agg(pl.col("cents").median().alias("med")))
    base = old.join(med, on="gl_account", how="left", maintain_order="left")["med"].to_numpy()
    cents = np.maximum(old["cents"].to_numpy() * rng.uniform(20, 60, j.height),
                       base * rng.uniform(40, 90, j.height))
    cents = np.minimum(cents, 20_000_000).astype(np.int64)
    m.set_cents(old["jk"].to_numpy(), cents)
    dept = np.array([w.dept_of[u] for u in j.sort("jk")["entered_by"].to_list()])
    user, rank = w.enterer(rng, dept, cents)
    m.update(j.sort("jk").select("jk").with_columns(
        entered_by=pl.Series(user), approved_by=pl.Series(w.approver(dept, cents, rank))),
        "amount_outlier")


def _clerk_invoices(m: Month, k: int) -> pl.DataFrame:
    clerks = pl.Series(m.w.clerk_ids).implode()
    return m.pick(k, pl.col("kind").eq("invoice") & pl.col("entered_by").is_in(clerks), True)


def _above_approval_limit(m: Month, k: int) -> None:
    j = _clerk_invoices(m, k).sort("jk")
    limit = np.array([m.w.limit_of[u] for u in j["entered_by"].to_list()], dtype=np.int64)
    cents = (limit * m.rng.uniform(1.15, 2.5, j.height)).astype(np.int64)
    m.set_cents(j["jk"].to_numpy(), cents)
    m.update(j.select("jk"), "above_approval_limit")


def _just_below_approval_limit(m: Month, k: int) -> None:
    j = _clerk_invoices(m, k).sort("jk")
    limit = np.array([m.w.limit_of[u] for u in j["entered_by"].to_list()], dtype=np.int64)
    cents = (limit * m.rng.uniform(0.955, 0.998, j.height)).astype(np.int64)
    cents = np.where(m.rng.random(j.height) < 0.5, cents // 100 * 100, cents)
    m.set_cents(j["jk"].to_numpy(), cents)
    m.update(j.select("jk"), "just_below_approval_limit")


def _ends_in_nines(m: Month, k: int) -> None:
    j = _clerk_invoices(m, k).sort("jk")
    cents = m.rng.choice(np.array([99999, 149999, 199999, 299999, 299900, 399999, 249999,
                                   49999, 99900]), j.height)
    m.set_cents(j["jk"].to_numpy(), cents)
    m.update(j.select("jk"), "ends_in_nines")


def _move_days(m: Month, j: pl.DataFrame, days: np.ndarray, scenario: str) -> None:
    """Post and key ``j`` on ``days`` (office hours), keeping the voucher date before it."""
    rng = m.rng
    n = j.height
    doc = np.minimum(_days(j["document_date"]), days)
    m.update(j.select("jk").with_columns(
        posting_date=pl.Series(days).cast(pl.Date), document_date=pl.Series(doc).cast(pl.Date),
        entered_at=pl.Series(fr.at_seconds(days, rng.integers(9 * 3600, 16 * 3600, n)))),
        scenario)


def _weekend_posting(m: Month, k: int) -> None:
    days = m.gen.days[m.w.cal.weekday(m.gen.days) >= 5]
    j = m.pick(k, _people(m))
    _move_days(m, j, m.rng.choice(days, j.height), "weekend_posting")


def _holiday_posting(m: Month, k: int) -> None:
    hol = m.w.cal.holidays
    days = m.gen.days[np.isin(m.gen.days, hol) & (m.w.cal.weekday(m.gen.days) < 5)]
    if len(days) == 0:
        return
    j = m.pick(k, _people(m))
    _move_days(m, j, m.rng.choice(days, j.height), "holiday_posting")


def _night_posting(m: Month, k: int) -> None:
    j = m.pick(k, _people(m))
    rng = m.rng
    day = _days(j["entered_at"].dt.date())
    late = rng.random(j.height) < 0.6
    secs = np.where(late, rng.integers(22 * 3600, 24 * 3600 - 60, j.height),
                    rng.integers(0, 4 * 3600, j.height))
    m.update(j.select("jk").with_columns(entered_at=pl.Series(fr.at_seconds(day, secs))),
             "night_posting")


def _self_approval(m: Month, k: int) -> None:
    j = m.pick(k, _people(m))
    m.update(j.select("jk", approved_by="entered_by"), "self_approval")


def _suspicious_description(m: Month, k: int) -> None:
    # on amounts that matter (>= 300 EUR); a "Geschenk" of 12 EUR is nobody's concern
    big = m.l.filter((pl.col("cents") >= 30_000) & ~pl.col("anchor"))["jk"].implode()
    j = m.pick(k, _people(m) & pl.col("jk").is_in(big))
    text = m.rng.choice(SUSPICIOUS, j.height)
    t = pl.DataFrame({"jk": j["jk"], "t": text})
    m.update(t.rename({"t": "header_description"}), "suspicious_description")
    m.l = (m.l.join(t, on="jk", how="left")
           .with_columns(description=pl.when(pl.col("t").is_not_null() & ~pl.col("anchor"))
                         .then(pl.col("t")).otherwise(pl.col("description"))).drop("t"))


def _service_user_manual(m: Month, k: int) -> None:
    j = m.pick(k, pl.col("kind").eq("gl") & (pl.col("source") == "manual"))
    users = m.rng.choice(np.array(["SVC_HKR", "SVC_PAYROLL"]), j.height, p=[0.7, 0.3])
    m.update(j.select("jk").with_columns(entered_by=pl.Series(users)), "service_user_manual")


def _backdated(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    j = m.pick(k, pl.col("kind").eq("gl") & (pl.col("source") == "manual"))
    n = j.height
    post = rng.choice(m.gen.workdays[:5], n)
    entered = w.cal.next_workday(post + rng.integers(24, 34, n))
    m.update(j.select("jk").with_columns(
        posting_date=pl.Series(post).cast(pl.Date), document_date=pl.Series(post).cast(pl.Date),
        entered_at=pl.Series(fr.at_seconds(entered, fr.office_seconds(rng, n)))), "backdated")


def _forward_posting(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    j = m.pick(k, pl.col("kind").eq("gl") & (pl.col("source") == "manual"))
    n = j.height
    post = rng.choice(m.gen.workdays[-5:], n)
    entered = w.cal.prev_workday(post - rng.integers(25, 50, n))
    m.update(j.select("jk").with_columns(
        posting_date=pl.Series(post).cast(pl.Date), document_date=pl.Series(post).cast(pl.Date),
        entered_at=pl.Series(fr.at_seconds(entered, fr.office_seconds(rng, n)))),
        "forward_posting")


def _closed_period_posting(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    j = m.pick(k, pl.col("kind").eq("gl") & (pl.col("source") == "manual"))
    n = j.height
    close = w.cal.period_close(m.gen.month)
    entered = w.cal.next_workday(np.full(n, close) + rng.integers(5, 45, n))
    m.update(j.select("jk").with_columns(
        entered_at=pl.Series(fr.at_seconds(entered, fr.office_seconds(rng, n)))),
        "closed_period_posting")


def _unbalanced_journal(m: Month, k: int) -> None:
    j = m.pick(k, pl.col("kind").eq("gl"), True)
    delta = m.rng.choice(np.array([1, 9, 10, 90, 100, 900, 1000]), j.height)
    delta = delta * m.rng.choice(np.array([-1, 1]), j.height)
    d = pl.DataFrame({"jk": j["jk"], "delta": delta})
    m.l = (m.l.join(d, on="jk", how="left")
           .with_columns(cents=pl.when(pl.col("delta").is_not_null() & pl.col("anchor"))
                         .then(pl.col("cents") - pl.col("delta")).otherwise(pl.col("cents")))
           .drop("delta"))
    m.update(j.select("jk"), "unbalanced_journal")


def _reversal_after_period_end(m: Month, k: int) -> None:
    """Storno of a G/L journal from an earlier, already closed period."""
    if m.pool is None or m.pool.height == 0:
        return
    rng, gen, w = m.rng, m.gen, m.w
    close_prev = w.cal.period_close(gen.month - 1)
    days = gen.workdays[gen.workdays > close_prev]
    if len(days) == 0:
        return
    ids = m.pool["journal_id"].unique().sort()
    ids = ids[np.sort(rng.choice(ids.len(), min(k, ids.len()), replace=False))]
    orig = m.pool.filter(pl.col("journal_id").is_in(ids.implode()))
    n = ids.len()
    jk = gen.keys(n)
    keymap = pl.DataFrame({"journal_id": ids, "jk": jk})
    post = rng.choice(days, n)
    user, rank = w.enterer(rng, np.full(n, "20"), np.full(n, 100_000))
    first = orig.filter(pl.col("line_no") == 1).join(keymap, on="journal_id").sort("jk")
    h = fr.headers(n, jk=keymap.sort("jk")["jk"], kind="gl", posting_date=post,
                   document_date=post,
                   entered_at=fr.at_seconds(post, fr.office_seconds(rng, n)),
                   entered_by=user, approved_by=w.approver(np.full(n, "20"), np.full(n, 100_000),
                                                           rank),
                   source="manual", document_type="SA", reference=first["reference"],
                   header_description=("Storno " + first["header_description"]).str.slice(0, 60),
                   reversal_of=first["journal_id"])
    l = (orig.join(keymap, on="journal_id")
         .with_columns(cents=-pl.col("cents"),
                       description=pl.concat_str(pl.lit("Storno "), pl.col("description"),
                                                 ignore_nulls=True))
         .select(fr.LINE_SCHEMA.names()))
    m.add(h, l, "reversal_after_period_end")


# --- phase 2: payments ----------------------------------------------------------------------

def _copy_payments(m: Month, j: pl.DataFrame, delay: np.ndarray, scenario: str,
                   new_ref: np.ndarray | None = None) -> None:
    rng, gen, w = m.rng, m.gen, m.w
    n = j.height
    j = j.sort("jk")
    post = w.cal.next_workday(_days(j["posting_date"]) + delay)
    post = np.minimum(post, gen.workdays[-1])
    manual = rng.random(n) < 0.5
    clerk, _ = w.pick_clerk(rng, np.full(n, "20"))
    secs = np.where(manual, fr.office_seconds(rng, n), rng.integers(22200, 24600, n))
    jk = gen.keys(n)
    ref = j["reference"].to_numpy().astype(str) if new_ref is None else new_ref
    h = j.with_columns(
        jk=pl.Series(jk), posting_date=pl.Series(post).cast(pl.Date),
        document_date=pl.Series(post).cast(pl.Date),
        entered_at=pl.Series(fr.at_seconds(post, secs)),
        entered_by=pl.Series(np.where(manual, clerk, "SVC_ZAHLLAUF")),
        source=pl.Series(np.where(manual, "manual", "payment_run")),
        document_type=pl.Series(np.where(manual, "KZ", "ZP")),
        reference=pl.Series(ref))
    keymap = pl.DataFrame({"jk": j["jk"], "jk_new": jk, "ref": ref})
    l = (m.l.join(keymap, on="jk")
         .with_columns(jk=pl.col("jk_new"),
                       description=pl.concat_str(pl.lit("Zahlung "), pl.col("ref")))
         .select(fr.LINE_SCHEMA.names()))
    m.add(h, l, scenario)


def _payments(m: Month, k: int, max_day: int = 31) -> pl.DataFrame:
    return m.pick(k, pl.col("kind").eq("payment") & (pl.col("posting_date").dt.day() <= max_day)
                  & pl.col("source").eq("payment_run"))


def _duplicate_payment(m: Month, k: int) -> None:
    j = _payments(m, k, 22)
    _copy_payments(m, j, m.rng.integers(2, 9, j.height), "duplicate_payment")


def _near_duplicate_payment(m: Month, k: int) -> None:
    j = _payments(m, k, 24).sort("jk")
    ref = j["reference"].to_numpy().astype(str)
    style = m.rng.integers(0, 3, j.height)
    new = np.select([style == 0, style == 1],
                    [np.char.add(ref, "A"), np.char.add(ref, "-1")], np.char.add("0", ref))
    _copy_payments(m, j, m.rng.integers(1, 8, j.height), "near_duplicate_payment", new)


def _set_bank(m: Month, jk: np.ndarray, iban: np.ndarray) -> None:
    d = pl.DataFrame({"jk": jk, "iban": iban})
    m.l = (m.l.join(d, on="jk", how="left")
           .with_columns(bank_account=pl.when(pl.col("iban").is_not_null()
                                              & pl.col("bank_account").is_not_null())
                         .then(pl.col("iban")).otherwise(pl.col("bank_account")))
           .drop("iban"))


def _one_off_bank_account(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    j = _payments(m, k).sort("jk")
    n = j.height
    clerk, _ = w.pick_clerk(rng, np.full(n, "20"))
    day = _days(j["posting_date"])
    _set_bank(m, j["jk"].to_numpy(), md.random_ibans(rng, n))
    m.update(j.select("jk").with_columns(
        entered_by=pl.Series(clerk), source=pl.lit("manual"), document_type=pl.lit("KZ"),
        entered_at=pl.Series(fr.at_seconds(day, fr.office_seconds(rng, n)))),
        "one_off_bank_account")


def _vendor_bank_change(m: Month, k: int) -> None:
    rng, w = m.rng, m.w
    changed = w.vendors.filter(pl.col("change_date").is_not_null())["vendor_id"]
    ap = m.l.filter(pl.col("line_no") == 1).select("jk", "vendor_id")
    cand = m.h.join(ap, on="jk").filter(~pl.col("vendor_id").is_in(changed.implode()))
    j = m.pick(k, pl.col("kind").eq("payment") & pl.col("source").eq("payment_run")
               & pl.col("jk").is_in(cand["jk"].implode()))
    j = j.join(ap, on="jk").sort("jk")
    n = j.height
    if n == 0:
        return
    day = _days(j["posting_date"])
    vendor = j["vendor_id"].to_numpy()
    old = w.iban_at(vendor, day)
    new = md.random_ibans(rng, n)
    clerk, _ = w.pick_clerk(rng, np.full(n, "20"))
    before = w.cal.prev_workday(day - rng.integers(1, 6, n))
    after = w.cal.next_workday(day + rng.integers(2, 9, n))
    log = pl.DataFrame({
        "vendor_id": np.concatenate([vendor, vendor]),
        "changed_at": np.concatenate([fr.at_seconds(before, fr.office_seconds(rng, n)),
                                      fr.at_seconds(after, fr.office_seconds(rng, n))]),
        "field": "bank_account",
        "old_value": np.concatenate([old, new]), "new_value": np.concatenate([new, old]),
        "changed_by": np.concatenate([clerk, clerk])}).cast(CHANGE_SCHEMA)
    w.vendor_changes.append(log)
    _set_bank(m, j["jk"].to_numpy(), new)
    m.update(j.select("jk"), "vendor_bank_change")

