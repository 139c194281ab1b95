"""A real PostgreSQL server for the tests (imported by conftest.py): one throwaway cluster per test
session, started on a free port the first time a test asks for it and deleted at the end, and a
fresh database per test. A test runs on both backends with `@on_both_backends` (it takes `store`,
see conftest.py) or asks for `pg_url` itself."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playground.data.pg_cluster import LocalCluster

BACKENDS = ("sqlite", "postgres")
# The `store` fixture on each backend: SQLite in the test's temp folder, or a fresh PostgreSQL database.
on_both_backends = pytest.mark.parametrize("store", BACKENDS, indirect=True)
_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[LocalCluster]:
    """The session's server; fsync off, since nothing in it outlives the session."""
    from playground.data.pg_cluster import LocalCluster

    cluster = LocalCluster(durable=False)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_url(postgres_cluster: LocalCluster) -> Iterator[str]:
    """postgresql://playground@127.0.0.1:PORT/DB of a new, empty database for this test alone."""
    name = f"test_{next(_numbers)}"
    postgres_cluster.admin(f"CREATE DATABASE {name}")
    yield postgres_cluster.url(name)
    postgres_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
