"""`evault bench codec` (being built)."""

from evault.errors import EvaultError


def run(*, json_output: bool, quick: bool) -> None:
    raise EvaultError("evault bench codec is not built yet")
