"""Replies without login: single-use, expiring, unguessable tokens (only their hash stored),
replies sealed in the area's inbox, ``ReplyReceived`` on Kafka, safeguarding escalation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer
from test_notifications_support import (  # noqa: F401 - fixtures
    HULL,
    PUBLIC,
    WARD_HULL,
    Env,
    add_people,
    env_fixture,
    read_topic,
    request,
    smtp_server_fixture,
)

from consumers.notifications.replies import ReplyInvalid, area_inbox, record_reply
from consumers.notifications.tokens import (
    REPLY_TTL,
    TokenRefused,
    TokenStatus,
    check_reply_token,
    purge_expired_tokens,
)
from identity.crypto import load_master_key
from identity.vault import IdentityVault, KeyShredded
from lpt.kafka import make_producer
from schemas.notifications import Audience, ReplyReceived
from schemas.registry import decode
from schemas.topics import REPLIES

REPLY_RE = re.compile(re.escape(PUBLIC) + r"/reply/([A-Za-z0-9_-]{43})")


@pytest.fixture
async def producer(env: Env) -> AsyncIterator[AIOKafkaProducer]:
    p = make_producer(env.settings)
    await p.start()
    yield p
    await p.stop()


async def reply_tokens(
    env: Env, n: int, allow_reply: bool = True, nid: str = "n-r"
) -> list[tuple[str, str]]:
    """(resident id, reply token) for ``n`` residents sent a real message."""
    people = await add_people(env.pool, env.settings, [(HULL, WARD_HULL)] * n)
    await env.dispatcher.handle(request(nid, Audience(cells=[HULL]), allow_reply=allow_reply))
    out = []
    for p in people:
        [mail] = env.smtp.inbox.to(p.email)
        found = REPLY_RE.findall(mail.get_content())
        out.append((p.resident_id, found[0] if found else ""))
    return out


async def test_reply_is_sealed_in_the_area_inbox_and_published(
    env: Env, producer: AIOKafkaProducer
) -> None:
    vault = IdentityVault(env.pool, load_master_key(env.settings.master_key_file))
    [(rid, token), (rid2, token2)] = await reply_tokens(env, 2)
    calm = await record_reply(
        env.pool, vault, producer, env.settings, token, "Thanks, much better now.", env.clock()
    )
    worried = await record_reply(
        env.pool, vault, producer, env.settings, token2, "A man threatened me with a knife",
        env.clock(),
    )  # fmt: skip
    assert not calm.escalated and worried.escalated
    assert calm.ward_code == WARD_HULL and calm.area_cell is not None
    assert calm.notification_id == "n-r"

    # Stored sealed: the text is nowhere in the table, yet opens with the resident's key.
    dump = await env.pool.fetchval("SELECT string_agg(r::text, ' ') FROM reply_inbox r")
    assert "much better" not in dump and "knife" not in dump
    inbox = await area_inbox(env.pool, ward_codes=[WARD_HULL])
    assert [e.reply_id for e in inbox] == [worried.reply_id, calm.reply_id]  # escalated first
    assert await vault.unseal(inbox[1].body) == "Thanks, much better now."
    assert await area_inbox(env.pool, ward_codes=["E05000000"]) == []

    events = [decode(r.value) for r in await read_topic(env.settings, REPLIES)]
    assert all(isinstance(e, ReplyReceived) for e in events)
    by_id = {e.reply_id: e for e in events}  # type: ignore[attr-defined]
    assert by_id[worried.reply_id].escalated and by_id[worried.reply_id].resident_id == rid2
    assert await vault.unseal(by_id[calm.reply_id].body) == "Thanks, much better now."  # type: ignore[attr-defined]

    # After erasure the stored and published bodies are unreadable.
    await vault.shred(rid)
    with pytest.raises(KeyShredded):
        await vault.unseal(inbox[1].body)


async def test_token_reuse_expiry_and_tampering_are_refused(
    env: Env, producer: AIOKafkaProducer
) -> None:
    vault = IdentityVault(env.pool, load_master_key(env.settings.master_key_file))
    [(_, used), (_, expiring), (_, other)] = await reply_tokens(env, 3)

    async def reply(token: str, text: str = "hello") -> TokenStatus | None:
        try:
            await record_reply(env.pool, vault, producer, env.settings, token, text, env.clock())
        except TokenRefused as exc:
            return exc.status
        return None

    assert await reply(used) is None
    assert await reply(used) is TokenStatus.USED  # single use
    with pytest.raises(TokenRefused):
        await check_reply_token(env.pool, used, env.clock())

    flipped = other[:-1] + ("A" if other[-1] != "A" else "B")
    assert await reply(flipped) is TokenStatus.UNKNOWN  # tampered
    assert await reply(other + "x") is TokenStatus.UNKNOWN
    assert await reply("../../etc/passwd") is TokenStatus.UNKNOWN
    assert await reply("") is TokenStatus.UNKNOWN

    env.clock.advance(REPLY_TTL + timedelta(seconds=1))
    assert await reply(expiring) is TokenStatus.EXPIRED
    # Refusals used nothing up: the untampered token is merely expired now.
    assert await reply(other) is TokenStatus.EXPIRED
    assert await env.pool.fetchval("SELECT count(*) FROM reply_inbox") == 1
    # Expired tokens are purged by the worker's housekeeping.
    assert await purge_expired_tokens(env.pool, env.clock()) == 3


async def test_bad_reply_bodies_and_no_link_when_replies_are_off(
    env: Env, producer: AIOKafkaProducer
) -> None:
    vault = IdentityVault(env.pool, load_master_key(env.settings.master_key_file))
    [(_, token)] = await reply_tokens(env, 1)
    for body in ("   ", "x" * 4001):
        with pytest.raises(ReplyInvalid) as err:
            await record_reply(env.pool, vault, producer, env.settings, token, body)
        assert err.value.field == "body"
    # The refused bodies did not use the token.
    await check_reply_token(env.pool, token, env.clock())

    [(_, none)] = await reply_tokens(env, 1, allow_reply=False, nid="n-noreply")
    assert none == ""
