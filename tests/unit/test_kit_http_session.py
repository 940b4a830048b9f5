"""`kit.http_client.aiohttp_session` turns off aiohttp's second sending of a request whose
connection broke. It does so through an attribute of aiohttp's session, not an option: these
fail if an aiohttp no longer has it, before anything is sent twice unnoticed."""

from __future__ import annotations

import aiohttp

from pizzeria.kit.http_client import aiohttp_session


async def test_aiohttp_still_has_the_attribute_that_turns_its_second_sending_off() -> None:
    plain = aiohttp.ClientSession()
    try:
        assert plain._retry_connection is True
    finally:
        await plain.close()


async def test_the_sessions_made_here_send_each_request_once() -> None:
    session = aiohttp_session()
    try:
        assert session._retry_connection is False
    finally:
        await session.close()
