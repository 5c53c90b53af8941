"""Working-day calendar of the entity's Bundesland, as numpy day numbers for vectorised use.

People book on working days only (Mon-Fri, no public holiday of the state); the generator
snaps their dates to this calendar, and the anomaly injector picks weekends and holidays from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import holidays
import numpy as np

D = "datetime64[D]"


@dataclass
class Calendar:
    year: int
    state: str
    days: np.ndarray = field(init=False)
    """All days from 1 Dec of the previous year to end of February of the next (datetime64[D])."""
    workdays: np.ndarray = field(init=False)
    holidays: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.days = np.arange(np.datetime64(f"{self.year - 1}-12-01"),
                              np.datetime64(f"{self.year + 1}-03-01"), dtype=D)
        hol = holidays.country_holidays("DE", subdiv=self.state,
                                        years=[self.year - 1, self.year, self.year + 1])
        self.holidays = np.array(sorted(hol.keys()), dtype=D)
        weekday = (self.days.astype("int64") - 4) % 7  # 0 = Monday (1970-01-01 was a Thursday)
        is_hol = np.isin(self.days, self.holidays)
        self.workdays = self.days[(weekday < 5) & ~is_hol]

    @staticmethod
    def weekday(d: np.ndarray) -> np.ndarray:
        """0 = Monday ... 6 = Sunday."""
        return (d.astype(D).astype("int64") - 4) % 7

    def is_workday(self, d: np.ndarray) -> np.ndarray:
        return np.isin(d.astype(D), self.workdays)

    def next_workday(self, d: np.ndarray, offset: np.ndarray | int = 0) -> np.ndarray:
        """The first working day on or after ``d``, moved on by ``offset`` working days."""
        i = np.searchsorted(self.workdays, d.astype(D), side="left") + offset
        return self.workdays[np.clip(i, 0, len(self.workdays) - 1)]

    def prev_workday(self, d: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.workdays, d.astype(D), side="right") - 1
        return self.workdays[np.clip(i, 0, len(self.workdays) - 1)]

    def month_days(self, month: int) -> np.ndarray:
        start = np.datetime64(date(self.year, month, 1), "D")
        end = np.datetime64(date(self.year + (month == 12), month % 12 + 1, 1), "D")
        return self.days[(self.days >= start) & (self.days < end)]

    def month_workdays(self, month: int) -> np.ndarray:
        days = self.month_days(month)
        return days[np.isin(days, self.workdays)]

    def period_close(self, month: int) -> np.datetime64:
        """Periods close on the 10th working day of the following month."""
        nxt = np.datetime64(date(self.year + (month == 12), month % 12 + 1, 1), "D")
        return self.next_workday(np.array([nxt]), 9)[0]
