"""The session every benchmark stores: what an authenticated shopper's session holds.

About 15 keys and 1 KB of JSON: Django's auth keys, a CSRF token, a cart, flags,
recently viewed ids and a 300-byte string. ``payload(i)`` varies sizes a little
with ``i`` (deterministically) so that 10,000 sessions do not all land in the
same allocator size class when memory is measured.
"""

from __future__ import annotations

import hashlib
from typing import Any

# What the shopper's browser sends with every request: the per-user index stores
# it (and the IP) beside each signed-in session, so it is part of the index's cost.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
NOTE = (
    "Deliver between 9:00 and 17:00 on weekdays. Leave the parcel with the concierge at the "
    "front desk if nobody answers; the code for the outer door is on the intercom panel. "
    "Please do not ring the bell after 19:00, there is a baby asleep upstairs. Thank you! "
    "Please gift-wrap the books, with no invoice."
)
assert len(NOTE) == 300, len(NOTE)

SKUS = ["SKU-10023", "SKU-20441", "SKU-31877", "SKU-40192", "SKU-55310", "SKU-61209"]


def _hex(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def payload(i: int = 0) -> dict[str, Any]:
    items = 3 + i % 4  # 3..6 cart lines
    return {
        "_auth_user_id": str(4821 + i),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": _hex(f"hash{i}", 64),
        "_csrftoken": _hex(f"csrf{i}", 32),
        "cart": [
            {"sku": SKUS[(i + n) % len(SKUS)], "qty": 1 + (i + n) % 3, "price": f"{19 + n}.99"}
            for n in range(items)
        ],
        "cart_updated": "2026-11-21T12:34:56.789012+00:00",
        "currency": "EUR",
        "locale": "en-GB",
        "timezone": "Europe/Berlin",
        "flags": {"beta": True, "newsletter": i % 2 == 0, "dark_mode": False},
        "recently_viewed": [1000 + (i * 7 + n) % 9000 for n in range(4 + i % 5)],
        "checkout_step": "shipping",
        "delivery_note": NOTE[: 300 - (i % 9)],
        "ab_bucket": i % 16,
        "visits": 1,
    }
