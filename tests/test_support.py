"""The support use cases every front end calls (the JSON API and the support page)."""

from __future__ import annotations

from service.support import Difference, declaration_differences


def test_a_declaration_differs_where_a_count_differs_and_a_missing_type_counts_zero() -> None:
    assert declaration_differences({"logbook_entry": 3, "goal": 1}, {"logbook_entry": 3, "goal": 1}) == {}
    assert declaration_differences({"logbook_entry": 2}, {"logbook_entry": 1, "goal": 4}) == {
        "goal": Difference(expected=0, received=4),
        "logbook_entry": Difference(expected=2, received=1),
    }
