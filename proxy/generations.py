"""Generation numbers in the database: a change (e.g. `flask upstreams reload`) bumps one, and
every worker on every host that reads a new number knows to act on it."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy import storage

UPSTREAMS = "upstreams_generation"

_g = storage.generations.c


def read(engine: Engine, name: str) -> int:
    """The generation `name` is at (0 before its first bump)."""
    with engine.connect() as connection:
        value = connection.execute(select(_g.value).where(_g.name == name)).scalar()
    return int(value or 0)


def bump(engine: Engine, name: str) -> int:
    """Add one to `name`'s generation (made at 1); the new number."""
    with engine.begin() as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(
            dialect.insert(storage.generations)
            .values(name=name, value=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        connection.execute(
            update(storage.generations).where(_g.name == name).values(value=_g.value + 1)
        )
        return int(connection.execute(select(_g.value).where(_g.name == name)).scalar())
