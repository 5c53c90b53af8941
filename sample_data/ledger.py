"""Normal (unlabelled) journals of one month, generated vectorised.

Journal kinds and who books them:

- purchase invoices (KR): expense or asset debit / creditor credit, keyed by the Amt's clerks
  (or whoever's approval limit covers the amount), approved by the next level up;
- payments (ZP): creditor debit / bank credit, by the payment run ``SVC_ZAHLLAUF`` on Tuesdays
  and Thursdays, 10-30 days after the invoice, to the IBAN on file at that date;
- revenue (DZ): bank / taxes and fees via the cash-management interface ``SVC_HKR`` at night,
  also on weekends (legitimate weekend interface postings);
- Barkasse (KA): fees and petty purchases in the Bürgerbüro, weekly cash deposits;
- G/L (SA): reclassifications, internal allocations and month-end accruals by the Kämmerei;
- recurring: rent standing orders, energy instalments (same round amount each month), leasing
  invoices, construction instalments, Schlüsselzuweisungen, payroll via ``SVC_PAYROLL``;
- a few reversals (Storno) of the month's invoices by the clerk who keyed them.

Month-end days and December carry more volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from sample_data import frames as fr
from sample_data import master as md
from sample_data.world import World



class _CategoryTable:
    """Per-category arrays (accounts, departments, texts) for vectorised look-ups."""

    def __init__(self, cats: list[md.Category]) -> None:
        k = len(cats)
        self.keys = np.array([c.key for c in cats])
        self.acc1 = np.array([c.accounts[0] for c in cats])
        self.acc2 = np.array([c.accounts[-1] for c in cats])
        self.median = np.array([c.median for c in cats])
        self.sigma = np.array([c.sigma for c in cats])
        self.n_depts = np.array([len(c.depts) for c in cats])
        self.depts = np.full((k, self.n_depts.max()), "", dtype="<U2")
        self.n_texts = np.array([len(c.texts) for c in cats])
        self.texts = np.full((k, self.n_texts.max()), "", dtype="<U40")
        for i, c in enumerate(cats):
            self.depts[i, :len(c.depts)] = c.depts
            self.texts[i, :len(c.texts)] = c.texts


CT = _CategoryTable([*md.CATEGORIES, md.LANDLORD])
_ORDER = np.argsort(CT.keys)


def cat_index(cat: np.ndarray) -> np.ndarray:
    """Row of ``CT`` for each category key."""
    return _ORDER[np.searchsorted(CT.keys[_ORDER], cat)]


REVENUE = [  # account, weight, median EUR, cost center, text
    ("431100", 0.24, 45.0, "33100", "Verwaltungsgebühren"),
    ("432100", 0.24, 180.0, "65300", "Benutzungsgebühren"),
    ("401200", 0.18, 420.0, "20300", "Grundsteuer B"),
    ("401300", 0.12, 3800.0, "20300", "Gewerbesteuer"),
    ("441100", 0.10, 900.0, "65100", "Mieteinnahme"),
    ("456100", 0.12, 35.0, "32200", "Verwarngeld"),
]
FEES = np.array([800, 1000, 1200, 1500, 2280, 2880, 3700, 6000, 8100], dtype=np.int64)
MONTH_WEIGHT = np.array([0.9, 0.95, 1.0, 1.0, 1.0, 1.0, 0.85, 0.8, 1.0, 1.0, 1.1, 1.45])


@dataclass
class MonthPlan:
    invoices: int
    revenue: int
    cash: int
    gl: int
    reversals: int


def plan(total_lines: int) -> list[MonthPlan]:
    """Journal counts per month so that the year has about ``total_lines`` lines.

    An invoice brings its payment; per base journal we expect ~3.4 lines (see module doc).
    """
    base = max(total_lines - 1500, 600) / 3.25
    share = MONTH_WEIGHT / MONTH_WEIGHT.sum()
    out = []
    for s in share:
        b = base * s
        out.append(MonthPlan(int(b * 0.66), int(b * 0.18), int(b * 0.07), int(b * 0.07),
                             int(b * 0.02)))
    return out


def _day_weights(days: np.ndarray) -> np.ndarray:
    """Working days weighted towards the month's end (and a little its start)."""
    wt = np.ones(len(days))
    wt[-3:] = 2.2
    wt[:2] = 1.3
    return wt / wt.sum()


class MonthGen:
    """Generates one month's normal journals; ``next_jk`` keeps journal keys unique."""

    def __init__(self, w: World, month: int, next_jk: int) -> None:
        self.w = w
        self.month = month
        self.rng = np.random.default_rng([w.seed, 100 + month])
        self.jk = next_jk
        self.workdays = w.cal.month_workdays(month)
        self.days = w.cal.month_days(month)
        self.pwork = _day_weights(self.workdays)

    def keys(self, n: int) -> np.ndarray:
        k = np.arange(self.jk, self.jk + n, dtype=np.int64)
        self.jk += n
        return k

    def people_dates(self, n: int, days: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Posting day and entry timestamp for journals keyed by people (working days only)."""
        rng = self.rng
        post = days if days is not None else rng.choice(self.workdays, n, p=self.pwork)
        lag = np.where(rng.random(n) < 0.75, 0, rng.integers(1, 4, n))
        entered = self.w.cal.next_workday(post, lag)
        return post, fr.at_seconds(entered, fr.office_seconds(rng, n))

    # --- purchase invoices -----------------------------------------------------------------
    def invoices(self, n: int, *, vendor: np.ndarray | None = None,
                 account: np.ndarray | None = None, cc: np.ndarray | None = None,
                 cents: np.ndarray | None = None, post: np.ndarray | None = None,
                 text: np.ndarray | None = None, reference: np.ndarray | None = None,
                 split_share: float = 0.15, scenario: str | None = None,
                 dept: np.ndarray | None = None, check_age: bool = True
                 ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Invoices: debit expense/asset (one or two cost centers), credit 351000/352000."""
        w, rng = self.w, self.rng
        if vendor is None:
            vendor = rng.choice(w.v_ids, n, p=w.v_p)
        post, entered = self.people_dates(n, post)
        doc = post - rng.integers(2, 26, n).astype("timedelta64[D]")
        vi = np.searchsorted(w.v_ids, vendor)
        too_new = (w.v_created[vi] > doc) & check_age
        if too_new.any():  # a vendor cannot invoice before it exists: pick an older one
            old = w.v_ids[(w.v_created <= doc.min()) & (w.v_cat != "vermieter")]
            vendor = np.where(too_new, rng.choice(old, n), vendor)
            vi = np.searchsorted(w.v_ids, vendor)
        ci = cat_index(w.v_cat[vi])
        if account is None:
            account = np.where(rng.random(n) < 0.5, CT.acc1[ci], CT.acc2[ci])
        if dept is None:
            dept = CT.depts[ci, (rng.random(n) * CT.n_depts[ci]).astype(int)]
        if cc is None:
            cc = w.pick_cc(rng, dept)
        if cents is None:
            cents = fr.round_cents(rng, CT.median[ci], CT.sigma[ci])
        if text is None:
            text = CT.texts[ci, (rng.random(n) * CT.n_texts[ci]).astype(int)]
        jk = self.keys(n)
        if reference is None:
            reference = invoice_refs(jk, vi, self.w.year)
        user, rank = w.enterer(rng, dept, cents)
        appr = w.approver(dept, cents, rank)
        ap = np.where(np.char.startswith(account.astype(str), "0"), md.AP_INV, md.AP)
        h = fr.headers(n, jk=jk, kind="invoice", posting_date=post, document_date=doc,
                       entered_at=entered, entered_by=user, approved_by=appr, source="manual",
                       document_type="KR", reference=reference,
                       header_description=np.char.add("ER ", reference.astype(str)),
                       scenario=scenario)
        split = (rng.random(n) < split_share) & (cents >= 2000)
        first = np.where(split, cents * rng.integers(30, 71, n) // 100, cents)
        cc2 = np.where(split, w.pick_cc(rng, dept), cc)
        debit = fr.lines(n, jk=jk, line_no=1, gl_account=account, cents=first, cost_center=cc,
                         description=text, anchor=False)
        debit2 = fr.lines(int(split.sum()), jk=jk[split], line_no=2, gl_account=account[split],
                          cents=(cents - first)[split], cost_center=cc2[split],
                          description=text[split], anchor=False)
        credit = fr.lines(n, jk=jk, line_no=np.where(split, 3, 2), gl_account=ap, cents=-cents,
                          vendor_id=vendor, description=np.char.add("Re. ", reference.astype(str)),
                          anchor=True)
        return h, pl.concat([debit, debit2, credit])

    # --- revenue via interface --------------------------------------------------------------
    def revenue(self, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        rng, w = self.rng, self.w
        wd = np.isin(self.days, self.workdays)
        p = np.where(wd, 1.0, 0.12)
        post = rng.choice(self.days, n, p=p / p.sum())
        acc = rng.choice(len(REVENUE), n, p=[r[1] for r in REVENUE])
        accounts = np.array([r[0] for r in REVENUE])[acc]
        med = np.array([r[2] for r in REVENUE])[acc]
        cents = fr.round_cents(rng, med, np.full(n, 0.9))
        if self.month in (2, 5, 8, 11):  # Grundsteuer/Gewerbesteuer fall due on the 15th
            day = self.workdays.astype("datetime64[D]").astype(object)
            near = self.workdays[[12 <= d.day <= 19 for d in day]]
            due = np.isin(accounts, ["401200", "401300"]) & (rng.random(n) < 0.7)
            post = np.where(due, rng.choice(near, n), post)
        cc = np.array([r[3] for r in REVENUE])[acc]
        text = np.array([r[4] for r in REVENUE])[acc]
        entered = fr.at_seconds(post + 1, fr.night_seconds(rng, n))
        ref = np.char.add("KZ", rng.integers(10**6, 10**7, n).astype(str))
        jk = self.keys(n)
        h = fr.headers(n, jk=jk, kind="revenue", posting_date=post, document_date=post,
                       entered_at=entered, entered_by="SVC_HKR", source="interface",
                       document_type="DZ", reference=ref,
                       header_description=np.char.add("Kontoauszug ", text))
        lines = fr.two_line(jk, md.BANK, accounts, cents, cr_cc=cc, dr_text=text, cr_text=text)
        return h, lines

    # --- Barkasse ---------------------------------------------------------------------------
    def cash(self, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        rng, w = self.rng, self.w
        kind = rng.choice(3, n, p=[0.62, 0.30, 0.08])
        post, entered = self.people_dates(n)
        fee = rng.choice(FEES, n)
        petty = fr.round_cents(rng, np.full(n, 25.0), np.full(n, 0.7))
        deposit = rng.integers(600, 3200, n).astype(np.int64) * 100
        cents = np.select([kind == 0, kind == 1], [fee, petty], deposit)
        dept = np.where(kind == 2, "20", "33")
        user, _ = w.pick_clerk(rng, dept)
        appr = w.lead_of[w.dept_index(dept)]
        dr = np.select([kind == 0, kind == 1], [md.CASH, "542100"], md.BANK)
        cr = np.select([kind == 0, kind == 1], ["431100", md.CASH], md.CASH)
        dr_cc = np.where(kind == 1, "33100", None)
        cr_cc = np.where(kind == 0, "33100", None)
        text = np.select([kind == 0, kind == 1],
                         ["Gebühr Bürgerbüro bar", "Barauslage Bürobedarf"],
                         "Einzahlung Barkasse")
        jk = self.keys(n)
        ref = np.char.add("Q", rng.integers(10**5, 10**6, n).astype(str))
        h = fr.headers(n, jk=jk, kind="cash", posting_date=post, document_date=post,
                       entered_at=entered, entered_by=user, approved_by=appr, source="manual",
                       document_type="KA", reference=ref, header_description=text)
        lines = fr.two_line(jk, dr, cr, cents, dr_cc=dr_cc, cr_cc=cr_cc, dr_text=text,
                            cr_text=text)
        return h, lines

    # --- Kämmerei G/L postings --------------------------------------------------------------
    def gl(self, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        rng, w = self.rng, self.w
        kind = rng.choice(3, n, p=[0.4, 0.3, 0.3])
        last = w.cal.month_workdays(self.month)[-3:]
        post = np.where(kind == 0, rng.choice(self.workdays, n, p=self.pwork),
                        rng.choice(last, n))
        post = np.where(kind == 2, self.workdays[-1], post)
        lag = np.select([kind == 2, rng.random(n) < 0.7], [rng.integers(1, 7, n), 0],
                        rng.integers(1, 3, n))
        entered = fr.at_seconds(w.cal.next_workday(post, lag), fr.office_seconds(rng, n))
        exp = rng.choice(np.array(["521100", "524100", "542100", "527100"]), n)
        dept = rng.choice(np.array(["65", "40", "51", "10", "66"]), n)
        cc_a = w.pick_cc(rng, dept)
        cc_b = w.pick_cc(rng, dept)
        cc_srv = rng.choice(np.array(["65100", "10200", "10300"]), n)
        cents = np.select([kind == 0, kind == 1],
                          [fr.round_cents(rng, np.full(n, 700.0), np.full(n, 0.9)),
                           fr.round_cents(rng, np.full(n, 2500.0), np.full(n, 0.8))],
                          fr.round_cents(rng, np.full(n, 1800.0), np.full(n, 1.0)))
        dr = np.select([kind == 1], ["581100"], exp)
        cr = np.select([kind == 0, kind == 1], [exp, "481100"], md.ACCRUAL)
        dr_cc = cc_a
        cr_cc = np.select([kind == 0, kind == 1], [cc_b, cc_srv], None)
        text = np.select([kind == 0, kind == 1],
                         ["Umbuchung Kostenstelle", "Interne Leistungsverrechnung"],
                         "Abgrenzung Monatsende")
        user, rank = w.enterer(rng, np.full(n, "20"), cents)
        appr = w.approver(np.full(n, "20"), cents, rank)
        jk = self.keys(n)
        ref = np.char.add("SA", rng.integers(10**5, 10**6, n).astype(str))
        h = fr.headers(n, jk=jk, kind="gl", posting_date=post, document_date=post,
                       entered_at=entered, entered_by=user, approved_by=appr, source="manual",
                       document_type="SA", reference=ref, header_description=text)
        lines = fr.two_line(jk, dr, cr, cents, dr_cc=dr_cc, cr_cc=cr_cc, dr_text=text,
                            cr_text=text)
        return h, lines

    # --- reversals of this month's invoices ------------------------------------------------
    def reversals(self, inv_h: pl.DataFrame, inv_l: pl.DataFrame, n: int
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
        rng = self.rng
        cand = inv_h.filter((pl.col("posting_date").dt.day() <= 22) & pl.col("scenario").is_null())
        n = min(n, cand.height)
        if n == 0:
            return fr.empty_headers(), fr.empty_lines()
        orig = cand.sort("jk")[np.sort(rng.choice(cand.height, n, replace=False))]
        post = self.w.cal.next_workday(orig["posting_date"].to_numpy(), rng.integers(1, 5, n))
        jk = self.keys(n)
        secs = fr.office_seconds(rng, n)
        h = orig.with_columns(
            reversal_of_jk=pl.col("jk"), jk=pl.Series(jk), kind=pl.lit("reversal"),
            posting_date=pl.Series(post).cast(pl.Date),
            document_date=pl.Series(post).cast(pl.Date),
            entered_at=pl.Series(fr.at_seconds(post, secs)),
            header_description=pl.concat_str(pl.lit("Storno "), pl.col("reference")))
        keymap = pl.DataFrame({"jk_old": orig["jk"], "jk_new": jk})
        lines = (inv_l.join(keymap, left_on="jk", right_on="jk_old")
                 .with_columns(jk=pl.col("jk_new"), cents=-pl.col("cents"),
                               description=pl.concat_str(pl.lit("Storno "), pl.col("description")))
                 .select(fr.LINE_SCHEMA.names()))
        return h, lines

    # --- recurring --------------------------------------------------------------------------
    def recurring(self) -> tuple[list[pl.DataFrame], list[pl.DataFrame], pl.DataFrame]:
        """Standing orders, instalments, payroll; returns headers, lines, and invoice contracts
        (leasing, construction) for the invoice builder."""
        w, rng, m = self.w, self.rng, self.month
        c = w.contracts.filter((pl.col("first_month") <= m) & (pl.col("last_month") >= m))
        hs, ls = [], []
        mm = f"{m:02d}/{w.year}"
        for kind, day, src_text in (("rent", 2, "Miete"), ("energy", None, "Abschlag")):
            k = c.filter(pl.col("kind") == kind)
            n = k.height
            if n == 0:
                continue
            if day is not None:
                post = np.full(n, self.workdays[day])
            else:
                post = w.cal.next_workday(np.full(n, np.datetime64(date(w.year, m, 15))))
            vendor = k["vendor_id"].to_numpy()
            bank = w.iban_at(vendor, post)
            jk = self.keys(n)
            ref = np.full(n, f"{src_text} {mm}")
            entered = fr.at_seconds(w.cal.next_workday(post, 1), fr.night_seconds(rng, n))
            hs.append(fr.headers(n, jk=jk, kind=kind, posting_date=post, document_date=post,
                                 entered_at=entered, entered_by="SVC_HKR", source="interface",
                                 document_type="DA" if kind == "rent" else "DL",
                                 reference=ref, header_description=ref))
            ls.append(fr.two_line(jk, k["gl_account"].to_numpy(), md.BANK,
                                  k["cents"].to_numpy(), dr_cc=k["cost_center"].to_numpy(),
                                  dr_vendor=vendor, cr_vendor=vendor, cr_bank=bank,
                                  dr_text=ref, cr_text=ref))
        # Schlüsselzuweisungen from the Land: one large receipt per month
        post = np.array([self.workdays[min(9, len(self.workdays) - 1)]])
        jk = self.keys(1)
        cents = np.array([int(rng.integers(90, 130)) * 1_000_000 * max(1, w.lines // 200_000)])
        hs.append(fr.headers(1, jk=jk, kind="revenue", posting_date=post, document_date=post,
                             entered_at=fr.at_seconds(post + 1, fr.night_seconds(rng, 1)),
                             entered_by="SVC_HKR", source="interface", document_type="DZ",
                             reference=np.array([f"SZW {mm}"]),
                             header_description=np.array(["Schlüsselzuweisung Land NRW"])))
        ls.append(fr.two_line(jk, md.BANK, "411100", cents, cr_cc="20100",
                              dr_text="Schlüsselzuweisung", cr_text="Schlüsselzuweisung"))
        h, l = self.payroll()
        hs.append(h)
        ls.append(l)
        inv = c.filter(pl.col("kind").is_in(["lease", "project"]))
        return hs, ls, inv

    def payroll(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """One journal per Amt on the 28th: debits per cost center, one bank credit."""
        w, rng, m = self.w, self.rng, self.month
        cc = w.cost_centers
        depts = sorted(set(cc["department"].to_list()))
        jk = self.keys(len(depts))
        dept_jk = dict(zip(depts, jk.tolist(), strict=True))
        scale = max(1, w.lines // 100_000)
        n = cc.height
        bonus = 1.7 if m == 11 else 1.0
        tarif = (rng.normal(38000, 9000, n).clip(8000) * 100 * scale * bonus).astype(np.int64)
        beamte = (rng.normal(14000, 4000, n).clip(3000) * 100 * scale * bonus).astype(np.int64)
        cc_jk = np.array([dept_jk[d] for d in cc["department"].to_list()])
        d1 = fr.lines(n, jk=cc_jk, gl_account="502100", cents=tarif, cost_center=cc["cost_center"],
                      description="Entgelte", anchor=False)
        d2 = fr.lines(n, jk=cc_jk, gl_account="501100", cents=beamte,
                      cost_center=cc["cost_center"], description="Dienstbezüge", anchor=False)
        debits = pl.concat([d1, d2]).sort("jk", "gl_account", "cost_center")
        debits = debits.with_columns(line_no=(pl.int_range(pl.len()).over("jk") + 1).cast(pl.Int32))
        tot = debits.group_by("jk").agg(cents=-pl.col("cents").sum(), line_no=pl.len() + 1)
        credit = fr.lines(tot.height, jk=tot["jk"], line_no=tot["line_no"], gl_account=md.BANK,
                          cents=tot["cents"], description="Auszahlung Bezüge", anchor=True)
        post = np.full(len(depts), np.datetime64(date(w.year, m, 28)))
        ref = np.full(len(depts), f"Bezüge {m:02d}/{w.year}")
        h = fr.headers(len(depts), jk=jk, kind="payroll", posting_date=post, document_date=post,
                       entered_at=fr.at_seconds(post, fr.night_seconds(rng, len(depts))),
                       entered_by="SVC_PAYROLL", source="interface", document_type="PY",
                       reference=ref,
                       header_description=np.char.add("Bezügeabrechnung Amt ", np.array(depts)))
        return h, pl.concat([debits, credit])

    def contract_invoices(self, c: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Leasing rates (first working day) and construction instalments (mid-month)."""
        n = c.height
        if n == 0:
            return fr.empty_headers(), fr.empty_lines()
        lease = (c["kind"] == "lease").to_numpy()
        post = np.where(lease, self.workdays[0], self.workdays[len(self.workdays) // 2])
        m = self.month
        cid = c["contract"].cast(pl.String).to_numpy().astype(str)
        nth = (m - c["first_month"].to_numpy() + 1).astype(str)
        ref = np.where(lease, np.char.add(np.char.add("LV", cid), f"-{m:02d}"),
                       np.char.add(np.char.add(np.char.add("AR", nth), "-"), cid))
        dept = c["cost_center"].to_numpy().astype("<U2")
        return self.invoices(n, vendor=c["vendor_id"].to_numpy(),
                             account=c["gl_account"].to_numpy(), cc=c["cost_center"].to_numpy(),
                             cents=c["cents"].to_numpy(), post=post,
                             text=c["text"].to_numpy(), reference=ref, split_share=0.0,
                             dept=dept)


def invoice_refs(jk: np.ndarray, vendor: np.ndarray, year: int) -> np.ndarray:
    """Supplier invoice numbers in the vendor's style, at most 12 characters.

    The number is a bijection of the unique journal key (mod 10^7, offset by vendor), so one
    vendor never repeats an invoice number, yet numbers look random.
    """
    n = len(jk)
    style = (vendor * 7 + 3) % 4
    num = (jk * 7_654_321 + vendor.astype(np.int64) * 104_729) % 10_000_000
    digits = np.char.zfill(num.astype(str), 7)
    return np.select([style == 0, style == 1, style == 2],
                     [np.char.add("RE", digits), digits, np.char.add(f"{year}-", digits)],
                     np.char.add("R-", digits)) if n else np.array([], dtype=str)


def schedule_payments(w: World, inv_h: pl.DataFrame, inv_l: pl.DataFrame,
                      rng: np.random.Generator) -> pl.DataFrame:
    """Due payments for invoices: vendor, reference, amount, creditor account, pay day."""
    cred = inv_l.filter(pl.col("vendor_id").is_not_null()).select(
        "jk", "vendor_id", "gl_account", cents=-pl.col("cents"))
    due = inv_h.select("jk", "posting_date", "reference").join(cred, on="jk").sort("jk")
    n = due.height
    term = rng.choice(np.array([10, 14, 21, 30]), n, p=[0.2, 0.4, 0.2, 0.2])
    target = due["posting_date"].to_numpy().astype("datetime64[D]") + term
    i = np.clip(np.searchsorted(w.pay_days, target), 0, len(w.pay_days) - 1)
    return due.with_columns(pay_date=pl.Series(w.pay_days[i]).cast(pl.Date)).drop("jk")


def payments(gen: MonthGen, due: pl.DataFrame, scenario: str | None = None
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Payment-run journals for the due items: creditor debit / bank credit."""
    w, rng = gen.w, gen.rng
    n = due.height
    if n == 0:
        return fr.empty_headers(), fr.empty_lines()
    post = due["pay_date"].to_numpy().astype("datetime64[D]")
    vendor = due["vendor_id"].to_numpy()
    cents = due["cents"].to_numpy()
    ref = due["reference"].to_numpy().astype(str)
    jk = gen.keys(n)
    # ~3 % are paid by hand in the Stadtkasse (urgent payments), the rest by the payment run
    manual = rng.random(n) < 0.03
    clerk, rank = w.enterer(rng, np.full(n, "20"), cents)
    secs = np.where(manual, fr.office_seconds(rng, n),
                    rng.integers(6 * 3600 + 600, 6 * 3600 + 3000, n))
    entered = fr.at_seconds(post, secs)
    appr = w.approver(np.full(n, "20"), cents, np.where(manual, rank, 1))
    h = fr.headers(n, jk=jk, kind="payment", posting_date=post, document_date=post,
                   entered_at=entered, entered_by=np.where(manual, clerk, "SVC_ZAHLLAUF"),
                   approved_by=appr, source=np.where(manual, "manual", "payment_run"),
                   document_type=np.where(manual, "KZ", "ZP"), reference=ref,
                   header_description=np.where(
                       manual, np.char.add("Eilzahlung ", ref),
                       np.char.add("Zahllauf ", np.datetime_as_string(post))),
                   scenario=scenario)
    bank = w.iban_at(vendor, post)
    lines = fr.two_line(jk, due["gl_account"].to_numpy(), md.BANK, cents, dr_vendor=vendor,
                        cr_vendor=vendor, cr_bank=bank, dr_text=np.char.add("Zahlung ", ref),
                        cr_text=np.char.add("Zahlung ", ref))
    return h, lines
