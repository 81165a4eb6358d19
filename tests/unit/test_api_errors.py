"""The one table from errors to HTTP statuses (``evault.gateway.errors_http``)."""

from __future__ import annotations

import inspect
from collections import defaultdict

import pytest

from evault import errors
from evault.errors import EvaultError
from evault.gateway.errors_http import (
    HTTP_LEVEL_CODES,
    INTERNAL_MESSAGE,
    STATUS_BY_ERROR,
    all_codes,
    error_body,
    evault_error_body,
    status_for,
)


def every_error_class() -> list[type[EvaultError]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, EvaultError)
    ]


def test_every_evault_error_is_mapped_explicitly() -> None:
    missing = [cls.__name__ for cls in every_error_class() if cls not in STATUS_BY_ERROR]
    assert not missing, (
        f"add these errors to STATUS_BY_ERROR in evault/gateway/errors_http.py: {missing}"
    )


def test_the_table_holds_only_evault_errors_with_error_statuses() -> None:
    for cls, status in STATUS_BY_ERROR.items():
        assert issubclass(cls, EvaultError)
        assert 400 <= status <= 599, cls
    for code, status in HTTP_LEVEL_CODES.items():
        assert 400 <= status <= 599, code


def test_a_code_always_means_the_same_status() -> None:
    statuses: dict[str, set[int]] = defaultdict(set)
    for cls, status in STATUS_BY_ERROR.items():
        statuses[cls.code].add(status)
    for code, status in HTTP_LEVEL_CODES.items():
        statuses[code].add(status)
    ambiguous = {code: s for code, s in statuses.items() if len(s) > 1}
    assert not ambiguous
    assert all_codes()["auth_failed"] == 401


def test_an_unlisted_subclass_falls_back_to_its_parent() -> None:
    class LateNotFound(errors.NotFound):
        code = "late_not_found"

    assert status_for(LateNotFound("document", "no document 'x'")) == 404
    assert status_for(errors.NodeTimeout(3, "get", "slow")) == 504


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.AuthFailed(), 401),
        (errors.UserExists("alice"), 409),
        (errors.BadName("document name", "must not be empty", ""), 400),
        (errors.DocumentTooLarge(10, 11, declared=True), 413),
        (errors.NotEnoughSlices(2, 3, {1: "down"}), 503),
        (errors.DepositFailed("too few signatures", {2: "bad share"}), 503),
        (errors.DocumentCorrupt("00" * 32, "11" * 32), 502),
    ],
)
def test_statuses_of_the_errors_clients_meet(exc: EvaultError, status: int) -> None:
    assert status_for(exc) == status
    body = evault_error_body(exc, status)
    assert body["error"]["code"] == exc.code
    assert body["error"]["message"] == str(exc)


def test_a_500_hides_its_message_and_details() -> None:
    exc = errors.CatalogError("catalog database error (sqlite): no such table: users", x=1)
    assert status_for(exc) == 500
    assert evault_error_body(exc, 500) == error_body("catalog_error", INTERNAL_MESSAGE)


def test_details_keep_only_plain_json() -> None:
    exc = errors.NotEnoughSlices(2, 3, {4: "down"})
    exc.details["obj"] = object()
    body = evault_error_body(exc, 503)
    assert body["error"]["details"] == {"have": 2, "need": 3, "failed": {"4": "down"}}
    assert "details" not in error_body("x", "y", {})["error"]
