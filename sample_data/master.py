"""Master data of the sample municipality: chart of accounts, departments, users, vendors.

Kept small and explicit (NKF-style chart, Ämter with their cost centers and usual accounts), so
that the booking generator can draw realistic combinations and the anomaly injector knows what
"unusual" means. Everything is deterministic by the seed it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

ENTITY = "Musterstadt"
STATE = "NW"
CURRENCY = "EUR"

# --- chart of accounts (NKF-style) ---------------------------------------------------------
ACCOUNTS: list[tuple[str, str, str]] = [
    ("071100", "Fahrzeuge", "asset"),
    ("081100", "Betriebs- und Geschäftsausstattung", "asset"),
    ("181000", "Sparkasse Girokonto", "bank"),
    ("181100", "Barkasse Bürgerbüro", "cash"),
    ("201000", "Allgemeine Rücklage", "equity"),
    ("351000", "Verbindlichkeiten aus Lieferungen und Leistungen", "liability"),
    ("352000", "Verbindlichkeiten aus Lieferungen und Leistungen (Investitionen)", "liability"),
    ("369000", "Sonstige Verbindlichkeiten (Abgrenzungen)", "liability"),
    ("401200", "Grundsteuer B", "revenue"),
    ("401300", "Gewerbesteuer", "revenue"),
    ("411100", "Schlüsselzuweisungen vom Land", "revenue"),
    ("431100", "Verwaltungsgebühren", "revenue"),
    ("432100", "Benutzungsgebühren", "revenue"),
    ("441100", "Mieten und Pachten (Erträge)", "revenue"),
    ("456100", "Bußgelder und Verwarngelder", "revenue"),
    ("481100", "Erträge aus internen Leistungsbeziehungen", "revenue"),
    ("501100", "Dienstbezüge Beamte", "expense"),
    ("502100", "Entgelte tariflich Beschäftigte", "expense"),
    ("521100", "Unterhaltung der Grundstücke und baulichen Anlagen", "expense"),
    ("522100", "Unterhaltung des Infrastrukturvermögens", "expense"),
    ("523100", "Mieten und Pachten", "expense"),
    ("524100", "Bewirtschaftung der Grundstücke und baulichen Anlagen", "expense"),
    ("525100", "Haltung von Fahrzeugen", "expense"),
    ("527100", "Besondere Verwaltungs- und Betriebsaufwendungen", "expense"),
    ("529100", "Lehr- und Unterrichtsmittel", "expense"),
    ("533100", "Sozialtransferaufwendungen Jugendhilfe", "expense"),
    ("541100", "Fortbildung und Dienstreisen", "expense"),
    ("542100", "Geschäftsaufwendungen", "expense"),
    ("544100", "Versicherungen und Beiträge", "expense"),
    ("581100", "Aufwendungen aus internen Leistungsbeziehungen", "expense"),
]
BANK, CASH, AP, AP_INV, ACCRUAL = "181000", "181100", "351000", "352000", "369000"

# --- departments (Ämter) -------------------------------------------------------------------
DEPARTMENTS: dict[str, str] = {
    "01": "Verwaltungsführung", "10": "Hauptamt", "14": "Rechnungsprüfungsamt",
    "20": "Kämmerei", "32": "Ordnungsamt", "33": "Bürgeramt", "37": "Feuerwehr",
    "40": "Schulamt", "51": "Jugendamt", "65": "Gebäudemanagement", "66": "Tiefbauamt",
}
COST_CENTERS: list[tuple[str, str, str]] = [
    ("01100", "Bürgermeisterin", "01"),
    ("10100", "Personal", "10"), ("10200", "Organisation und IT", "10"),
    ("10300", "Zentrale Dienste", "10"),
    ("14100", "Rechnungsprüfung", "14"),
    ("20100", "Haushalt", "20"), ("20200", "Stadtkasse", "20"), ("20300", "Steuern", "20"),
    ("32100", "Allgemeine Ordnung", "32"), ("32200", "Verkehrsüberwachung", "32"),
    ("33100", "Bürgerbüro", "33"),
    ("37100", "Feuerwehr", "37"),
    ("40100", "Grundschulen", "40"), ("40200", "Weiterführende Schulen", "40"),
    ("40300", "Schulverwaltung", "40"),
    ("51100", "Kindertagesstätten", "51"), ("51200", "Hilfen zur Erziehung", "51"),
    ("51300", "Jugendarbeit", "51"),
    ("65100", "Verwaltungsgebäude", "65"), ("65200", "Schulgebäude", "65"),
    ("65300", "Sportstätten", "65"),
    ("66100", "Straßen", "66"), ("66200", "Grünflächen", "66"),
]
# departments that book purchase invoices, with their share of invoice volume
INVOICE_DEPTS: dict[str, float] = {"65": 0.24, "40": 0.13, "51": 0.14, "66": 0.12, "37": 0.08,
                                   "32": 0.07, "10": 0.12, "20": 0.06, "33": 0.04}


@dataclass(frozen=True)
class Category:
    """A kind of supplier: which expense accounts it is booked to and by whom."""

    key: str
    accounts: tuple[str, ...]
    depts: tuple[str, ...]
    median: float  # typical invoice amount, EUR
    sigma: float
    weight: float
    names: tuple[str, ...]
    texts: tuple[str, ...]


CATEGORIES: list[Category] = [
    Category("buero", ("542100",), ("10", "20", "32", "33", "40", "51", "65", "66", "37"),
             180, 0.8, 0.14, ("Bürobedarf", "Schreibwaren", "Büroservice"),
             ("Büromaterial", "Druckerpatronen", "Kopierpapier", "Porto und Versand")),
    Category("it", ("542100", "527100"), ("10", "20"), 1400, 1.0, 0.06,
             ("IT-Systemhaus", "Softwarevertrieb", "Datentechnik"),
             ("Softwarepflege", "Lizenzgebühren", "IT-Wartung", "Hardware Ersatzteile")),
    Category("bau", ("521100",), ("65", "40", "37"), 2600, 1.0, 0.16,
             ("Bau", "Haustechnik", "Elektro", "Sanitär", "Dachdeckerei", "Malerbetrieb"),
             ("Reparatur Heizung", "Wartung Aufzug", "Malerarbeiten", "Elektroinstallation",
              "Dachreparatur", "Sanitärarbeiten", "Fensterreparatur")),
    Category("tiefbau", ("522100",), ("66",), 6500, 1.0, 0.07,
             ("Tiefbau", "Straßenbau", "Garten- und Landschaftsbau"),
             ("Schlaglochsanierung", "Grünpflege", "Markierungsarbeiten", "Baumpflege")),
    Category("energie", ("524100",), ("65", "40"), 900, 0.9, 0.08,
             ("Energieversorgung", "Wasserwerk", "Entsorgung"),
             ("Strom", "Gas", "Wasser/Abwasser", "Müllabfuhr")),
    Category("reinigung", ("524100",), ("65", "40", "51"), 1500, 0.7, 0.07,
             ("Gebäudereinigung", "Hausmeisterservice"),
             ("Unterhaltsreinigung", "Glasreinigung", "Winterdienst")),
    Category("kfz", ("525100",), ("37", "66", "32"), 650, 0.9, 0.07,
             ("Autohaus", "Kfz-Werkstatt", "Reifenservice"),
             ("Inspektion Dienstfahrzeug", "Reifenwechsel", "Kraftstoff", "TÜV-Prüfung")),
    Category("fortbildung", ("541100",), ("10", "20", "32", "40", "51", "65", "66"), 380, 0.7,
             0.05, ("Akademie", "Studieninstitut", "Seminare"),
             ("Fortbildung", "Seminargebühr", "Dienstreise")),
    Category("jugendhilfe", ("533100",), ("51",), 1900, 0.8, 0.12,
             ("Jugendhilfe", "Kinder- und Jugendwerk", "Familienhilfe"),
             ("Hilfe zur Erziehung", "Heimunterbringung", "Tagespflege")),
    Category("lehrmittel", ("529100",), ("40",), 420, 0.8, 0.06,
             ("Lehrmittel", "Schulbuchverlag", "Schulbedarf"),
             ("Schulbücher", "Unterrichtsmaterial", "Lernsoftware")),
    Category("versicherung", ("544100",), ("20",), 2400, 0.9, 0.02,
             ("Versicherung", "Kommunalversicherer"), ("Versicherungsbeitrag", "Beitrag")),
    Category("einrichtung", ("081100",), ("65", "40", "37", "10"), 2900, 0.8, 0.05,
             ("Büromöbel", "Einrichtungshaus", "Feuerwehrtechnik"),
             ("Büromöbel", "Ausstattung", "Geräteanschaffung")),
    Category("beratung", ("527100",), ("10", "20", "65"), 3200, 0.9, 0.05,
             ("Beratung", "Ingenieurbüro", "Rechtsanwälte", "Gutachter"),
             ("Beratungsleistung", "Gutachten", "Planungsleistung")),
]
LANDLORD = Category("vermieter", ("523100",), ("65",), 3500, 0.3, 0.0,
                    ("Immobilien", "Grundbesitz", "Vermietung"), ("Miete",))

SURNAMES = ("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch "
            "Richter Bauer Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann "
            "Hartmann Lange Schmitt Werner Krause Meier Lehmann Schmid Schulze Maier Köhler "
            "Herrmann König Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung "
            "Hahn Schubert Vogel Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz "
            "Baumann Franke Albrecht Schuster Simon Ludwig Böhm Winter Kraus Martin Schumacher "
            "Krämer Vogt Stein Jäger Otto Sommer Groß Seidel Heinrich Brandt Haas").split()
INITIALS = list("ABCDEFGHIJKLMNPRSTUW")
FIRST_NAMES = ("Anna Maria Sabine Petra Claudia Julia Laura Sandra Monika Karin Thomas Michael "
               "Andreas Stefan Frank Jürgen Markus Christian Peter Klaus").split()
BLZ = np.array([37050198, 10070000, 37040044, 50010517, 12030000, 43060967, 37010050,
                30050110, 36050105], dtype=np.int64)
LEGAL_FORMS = ("GmbH", "GmbH & Co. KG", "KG", "e.K.", "AG", "e.V.", "GbR")
TOWNS = ("Musterstadt", "Köln", "Düsseldorf", "Bonn", "Essen", "Dortmund", "Bochum", "Hagen")

SERVICE_USERS: dict[str, str] = {
    "SVC_HKR": "Schnittstelle Haushalts-/Kassenverfahren",
    "SVC_PAYROLL": "Schnittstelle Bezügeabrechnung",
    "SVC_ZAHLLAUF": "Zahllauf Stadtkasse",
}
LEVEL_LIMITS = {"clerk": 5000.0, "clerk2": 10000.0, "lead": 50000.0, "head": 250000.0,
                "kaemmerer": 1000000.0, "bm": 10000000.0}


def iban_de(bban: np.ndarray) -> np.ndarray:
    """German IBANs for 18-digit BBANs (BLZ*10^10 + account), checksum per ISO 13616."""
    r = ((bban % 97) * 1_000_000 + 131400) % 97  # "DE00" -> 131400 appended
    check = 98 - r
    return np.char.add(np.char.add("DE", np.char.zfill(check.astype(str), 2)),
                       np.char.zfill(bban.astype(str), 18))


def random_ibans(rng: np.random.Generator, n: int) -> np.ndarray:
    blz = rng.choice(BLZ, n)
    acct = rng.integers(10**8, 10**10 - 1, n, dtype=np.int64)
    return iban_de(blz * 10**10 + acct)


def accounts_frame() -> pl.DataFrame:
    return pl.DataFrame(ACCOUNTS, schema=["gl_account", "account_name", "account_type"],
                        orient="row")


def cost_centers_frame() -> pl.DataFrame:
    return pl.DataFrame(COST_CENTERS, schema=["cost_center", "cost_center_name", "department"],
                        orient="row")


def build_users(rng: np.random.Generator, scale: int, n_rare: int) -> pl.DataFrame:
    """People per Amt (clerks, one lead, one head), Kämmerer, Bürgermeisterin, service users.

    ``scale`` multiplies the clerks for big ledgers; ``n_rare`` extra users (temps, auditors)
    exist in the master but book nothing in normal data (the ``rare_user`` scenario uses them).
    """
    rows: list[tuple[str, str, str, float | None, bool, str]] = []
    used: set[str] = set()

    def name() -> str:
        while True:
            uid = f"{rng.choice(SURNAMES).upper()}_{rng.choice(INITIALS)}"
            uid = (uid.replace("Ä", "AE").replace("Ö", "OE").replace("Ü", "UE")
                   .replace("ß", "SS"))[:12]
            if uid not in used:
                used.add(uid)
                return uid

    clerks = {"10": 3, "20": 4, "32": 2, "33": 3, "37": 2, "40": 3, "51": 3, "65": 4, "66": 2}
    for dept, n in clerks.items():
        for i in range(n * scale):
            level = "clerk2" if i % 3 == 2 else "clerk"
            rows.append((name(), dept, level, LEVEL_LIMITS[level], False, "Sachbearbeitung"))
        rows.append((name(), dept, "lead", LEVEL_LIMITS["lead"], False, "Sachgebietsleitung"))
        rows.append((name(), dept, "head", LEVEL_LIMITS["head"], False, "Amtsleitung"))
    rows.append((name(), "20", "kaemmerer", LEVEL_LIMITS["kaemmerer"], False, "Kämmerer"))
    rows.append((name(), "01", "bm", LEVEL_LIMITS["bm"], False, "Bürgermeisterin"))
    rows.append((name(), "20", "stamm", LEVEL_LIMITS["clerk"], False, "Kreditorenstammdaten"))
    for i in range(n_rare):
        dept = ["14", "01", "10", "40", "51"][i % 5]
        rows.append((name(), dept, "rare", LEVEL_LIMITS["clerk2"], False, "Aushilfe/Vertretung"))
    for uid in SERVICE_USERS:
        rows.append((uid, "20" if uid != "SVC_PAYROLL" else "10", "service", None, True,
                     SERVICE_USERS[uid]))
    return pl.DataFrame(rows, schema={"user_id": pl.String, "department": pl.String,
                                      "level": pl.String, "approval_limit": pl.Float64,
                                      "is_service": pl.Boolean, "title": pl.String},
                        orient="row")


def build_vendors(rng: np.random.Generator, n: int, year: int) -> pl.DataFrame:
    """Suppliers with category, name, IBAN, creation date and Zipf-like activity weight.

    About 8 % are created during the fiscal year (legitimate new vendors), 4 % change their
    bank account once during the year (legitimate changes, logged).
    """
    cats = np.array([c.key for c in CATEGORIES])
    weights = np.array([c.weight for c in CATEGORIES])
    cat = rng.choice(cats, n, p=weights / weights.sum())
    cat_names = {c.key: c.names for c in CATEGORIES}
    part = np.array([cat_names[c][rng.integers(len(cat_names[c]))] for c in cat])
    surname = rng.choice(np.array(SURNAMES), n)
    form = rng.choice(np.array(LEGAL_FORMS), n, p=[.45, .15, .1, .12, .05, .08, .05])
    town = rng.choice(np.array(TOWNS), n)
    vendor_name = np.char.add(np.char.add(np.char.add(surname, " "), part), " ")
    vendor_name = np.char.add(vendor_name, form)
    vendor_name = np.where(rng.random(n) < 0.15,
                           np.char.add(np.char.add(np.char.add(part, " "), town), " GmbH"),
                           vendor_name)
    start = np.datetime64(f"{year}-01-01")
    created = start - rng.integers(30, 365 * 12, n).astype("timedelta64[D]")
    new = rng.random(n) < 0.08
    created = np.where(new, start + rng.integers(0, 300, n).astype("timedelta64[D]"), created)
    iban = random_ibans(rng, n)
    change = (rng.random(n) < 0.04) & ~new
    change_day = start + rng.integers(20, 330, n).astype("timedelta64[D]")
    iban_new = random_ibans(rng, n)
    # Kindertagespflege and foster parents are paid as private persons (personal data!)
    person = (cat == "jugendhilfe") & (rng.random(n) < 0.4)
    first = rng.choice(np.array(FIRST_NAMES), n)
    vendor_name = np.where(person, np.char.add(np.char.add(first, " "), surname), vendor_name)
    activity = rng.pareto(1.2, n) + 0.2
    return pl.DataFrame({
        "vendor_id": [str(7000001 + i) for i in range(n)],
        "vendor_name": vendor_name.tolist(),
        "category": cat.tolist(),
        "iban_initial": iban.tolist(),
        "created_at": created.astype("datetime64[D]").astype(date).tolist(),
        "change_date": np.where(change, change_day, np.datetime64("NaT")).astype(
            "datetime64[D]").tolist(),
        "iban_changed": np.where(change, iban_new, None).tolist(),
        "activity": activity,
        "is_person": person,
    }).with_columns(pl.col("change_date").cast(pl.Date))
