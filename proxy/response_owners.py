"""Whose each stored response is (`response_owners`): the Responses API's retrieve, delete and
input items reach a response only when it was created by the same account, as files do
(proxy/files.py); another account's, or an unknown one, is not found."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from proxy import storage
from proxy.errors import PARAM_ERROR, GatewayError

# The methods that name a stored response by `response_id`.
READS = frozenset({"v1/responses/retrieve", "v1/responses/delete", "v1/responses/input_items"})
CREATE = "v1/responses"


class ResponseOwners:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, account_id: int, response_id) -> None:
        """The response is `account_id`'s, unless it is already someone's."""
        if not isinstance(response_id, str) or not response_id or len(response_id) > 200:
            return
        table = storage.response_owners
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(table).values(
                        response_id=response_id,
                        account_id=account_id,
                        created_at=storage.utc_now(),
                    )
                )
        except IntegrityError:
            pass  # recorded already (a cache hit of the same create)

    def check(self, account_id: int, response_id: str) -> None:
        """Refuse a response that is not `account_id`'s as not found, whether or not it
        exists."""
        table = storage.response_owners
        with self.engine.connect() as connection:
            owner = connection.execute(
                select(table.c.account_id).where(table.c.response_id == response_id)
            ).scalar()
        if owner != account_id:
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.response_id: {response_id} is not a response of this account",
                http_status=404,
            )

    def forget(self, response_id: str) -> None:
        table = storage.response_owners
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.response_id == response_id))
