"""The support page's words: every member of each closed set has them."""

from __future__ import annotations

from enum import StrEnum

import pytest

from service.domain.outcomes import Outcome
from service.domain.progress import RecoveryState
from service.domain.records import EntityType, QuarantineReason
from service.domain.sources import Source
from service.web import views


@pytest.mark.parametrize(
    ("words", "closed_set"),
    [
        (views.STATE_LABELS, RecoveryState),
        (views.ENTITY_LABELS, EntityType),
        (views.ENTITY_ONE, EntityType),
        (views.OUTCOME_LABELS, Outcome),
        (views.REASON_WORDS, QuarantineReason),
        (views.SOURCE_LABELS, Source),
    ],
)
def test_every_member_has_words(words: dict[StrEnum, str], closed_set: type[StrEnum]) -> None:
    assert set(words) == set(closed_set)


def test_an_entity_type_the_service_does_not_know_is_named_as_it_came() -> None:
    assert views.kind("logbook_entry", 3) == "3 logbook entries"
    assert views.kind("goal", 1) == "1 goal"
    assert views.kind("Widget", 1) == "1 Widget" and views.kind("Widget", 2) == "2 widget"
