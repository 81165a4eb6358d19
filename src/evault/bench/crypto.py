"""`evault bench crypto` (being built)."""

from evault.errors import EvaultError


def run(*, json_output: bool, quick: bool) -> None:
    raise EvaultError("evault bench crypto is not built yet")
