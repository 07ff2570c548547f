"""Data variation for the stock CRM journeys: addresses, prices, dates, statuses, search terms.

Every entity a journey creates carries the run tag at the start of its address
(``LT-<run>-<suffix> 1423 Maple Ave, Springfield``), so the run's cleanup finds
it with ``search=<run tag>`` and can prove nothing is left. The suffix keeps
addresses unique without a shared counter across processes.
"""

from __future__ import annotations

import random
import string
from datetime import date, timedelta
from typing import Any

STREETS = (
    "Maple Ave", "Oak St", "Cedar Ln", "Pine Rd", "Elm St", "Willow Way", "Birch Ct", "Sycamore Dr",
    "Magnolia Blvd", "Chestnut St", "Aspen Trl", "Juniper Pl", "Harbor View Rd", "Lakeshore Dr",
    "Sunset Blvd", "Ridgecrest Rd", "Meadowbrook Ln", "Highland Ave", "Park Pl", "Mission St",
    "Vista Del Mar", "Canyon Rd", "Bayview Ter", "Orchard Ln", "Prospect Ave", "Hillside Dr",
    "Riverbend Ct", "Foxglove Way", "Mariposa Ave", "Palm Canyon Dr",
)
CITIES = (
    "Springfield", "Riverside", "Fairview", "Madison", "Georgetown", "Franklin", "Clinton",
    "Salem", "Greenville", "Bristol", "Oakland", "Pasadena", "Santa Barbara", "Boulder",
    "Austin", "Asheville", "Portland", "Savannah", "Scottsdale", "Naperville",
)
# The target API's listing lifecycle (the demo target accepts exactly these).
LISTING_STATUSES = ("active", "pending", "sold", "withdrawn")
# What a real user types into the search box: a street name, a city, a house number.
SEARCH_TERMS = tuple(s.split()[0] for s in STREETS) + CITIES + ("12", "300", "Ave", "Dr")

PRICE_MIN = 300_000
PRICE_MAX = 1_300_000
CLOSING_MIN_DAYS = 15
CLOSING_MAX_DAYS = 120
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def tagged_address(run_tag: str, rng: random.Random | None = None) -> str:
    """``<run tag>-<6 random chars> <number> <street>, <city>``: unique, realistic, findable by the tag."""
    rng = rng or random
    suffix = "".join(rng.choices(_SUFFIX_ALPHABET, k=6))
    return f"{run_tag}-{suffix} {rng.randint(1, 9999)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"


def price(rng: random.Random | None = None) -> int:
    """A price from 300k to 1.3M, rounded to 500 as real listings are."""
    rng = rng or random
    return rng.randint(PRICE_MIN // 500, PRICE_MAX // 500) * 500


def closing_date(rng: random.Random | None = None, *, today: date | None = None) -> str:
    """An ISO date 15 to 120 days from today."""
    rng = rng or random
    return ((today or date.today()) + timedelta(days=rng.randint(CLOSING_MIN_DAYS, CLOSING_MAX_DAYS))).isoformat()


def new_escrow(run_tag: str, rng: random.Random | None = None) -> dict[str, Any]:
    """The body of ``POST /escrows``."""
    return {
        "property_address": tagged_address(run_tag, rng),
        "closing_date": closing_date(rng),
        "purchase_price": price(rng),
    }


def new_listing(run_tag: str, rng: random.Random | None = None) -> dict[str, Any]:
    """The body of ``POST /listings``; new listings mostly start active."""
    rng = rng or random
    status = "active" if rng.random() < 0.8 else "pending"
    return {"address": tagged_address(run_tag, rng), "list_price": price(rng), "status": status}


def next_status(current: str | None, rng: random.Random | None = None) -> str:
    """A listing status different from ``current`` (what a broker's status change looks like)."""
    rng = rng or random
    return rng.choice([s for s in LISTING_STATUSES if s != current])


def search_term(rng: random.Random | None = None) -> str:
    rng = rng or random
    return rng.choice(SEARCH_TERMS)
