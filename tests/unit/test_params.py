import pytest

from evault.params import analyse


def test_defaults_tolerate_one_liar_one_down_at_deposit_two_at_retrieval() -> None:
    g = analyse(5, 3, 4)
    assert (g.t, g.deposit_down, g.retrieve_down_no_liars, g.retrieve_down_with_liars) == (
        1,
        1,
        2,
        1,
    )
    assert g.robust_receipts
    assert g.k - g.t >= g.m


def test_paper_setting_is_n_of_n_receipts() -> None:
    g = analyse(3, 2, 3)
    assert g.deposit_down == 0
    assert g.retrieve_down_no_liars == 1
    assert not g.robust_receipts
    assert any("Receipts need 3 of 3" in s for s in g.sentences())


@pytest.mark.parametrize(
    ("n", "m", "k", "word"),
    [
        (0, 1, 1, "n:"),
        (5, 6, 5, "m:"),
        (5, 3, 6, "k:"),
        (5, 4, 3, "k:"),
        (3, 3, 3, "guarantees nothing"),
    ],
)
def test_settings_that_guarantee_nothing_are_refused(n: int, m: int, k: int, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        analyse(n, m, k)


def test_non_integers_are_type_errors() -> None:
    with pytest.raises(TypeError, match="m:"):
        analyse(5, 3.0, 4)  # type: ignore[arg-type]


def test_k_minus_t_at_least_m_for_every_valid_setting() -> None:
    for n in range(1, 12):
        for m in range(1, n + 1):
            for k in range(m, n + 1):
                try:
                    g = analyse(n, m, k)
                except ValueError:
                    continue
                assert g.k - g.t >= g.m
                assert n >= 2 * g.t + 1
