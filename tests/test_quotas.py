"""service/quotas.py and service/voters.py: how often a voter may ask for an expensive action, and
the guest name a browser votes under without logins."""

import re

import pytest

from playground.core.errors import PlaygroundError
from service.quotas import RateLimit
from service.voters import guest_name, kept_name


def test_a_rate_limit_counts_each_key_over_a_sliding_window() -> None:
    now = [0.0]
    limit = RateLimit(2, 60.0, clock=lambda: now[0])
    limit.take("ana", "zips")
    now[0] = 30.0
    limit.take("ana", "zips")
    limit.take("bo", "zips")  # another voter has their own count
    with pytest.raises(PlaygroundError, match="zips: at most 2 every 60 s for a voter; try again in 30 s"):
        limit.take("ana", "zips")
    now[0] = 60.5  # the first one left the window
    limit.take("ana", "zips")
    with pytest.raises(PlaygroundError, match="try again in 30 s"):
        limit.take("ana", "zips")


def test_a_browser_keeps_a_valid_name_and_gets_a_new_guest_name_otherwise() -> None:
    names = {guest_name() for _ in range(50)}
    assert len(names) == 50 and all(re.fullmatch(r"guest-[0-9a-f]{8}", n) for n in names)
    assert kept_name("guest-0123abcd") == "guest-0123abcd" and kept_name(" carol ") == "carol"
    for lost in (None, "", "   ", 7, {"name": "x"}, "tab\tname", "x" * 500):
        assert re.fullmatch(r"guest-[0-9a-f]{8}", kept_name(lost))
