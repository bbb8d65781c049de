"""How long the API trusts a bearer token it accepted without asking the database again."""

from __future__ import annotations

import asyncio

import pytest

from cloudhub.apiauth import Authenticator
from cloudhub.credentials import CACHE_SECONDS, Identity, TokenRefused
from tests.support.clock import T0, ManualClock


class Tokens:
    """The database's answer for one token, and how often it was asked."""

    def __init__(self, identity: Identity, clock: ManualClock) -> None:
        self.identity = identity
        self.clock = clock
        self.asked = 0

    def check(self, _token: str) -> Identity:
        self.asked += 1
        expires = self.identity.expires
        if expires is not None and expires <= self.clock():
            raise TokenRefused("expired", "token abc expired")
        return self.identity


def identify(auth: Authenticator) -> Identity:
    return asyncio.run(auth.identify("Bearer abcdef.secret"))


def authenticator(identity: Identity) -> tuple[Authenticator, Tokens, ManualClock]:
    clock = ManualClock()
    tokens = Tokens(identity, clock)
    return Authenticator(tokens.check, clock=clock, wall_clock=clock), tokens, clock


def test_an_accepted_token_is_trusted_for_a_few_seconds() -> None:
    """Requests within CACHE_SECONDS of an accepted one do not read the database."""
    auth, tokens, clock = authenticator(Identity("token:abc", "viewer"))
    identify(auth)
    clock.now += CACHE_SECONDS - 0.5
    identify(auth)
    assert tokens.asked == 1
    clock.now += 1
    identify(auth)
    assert tokens.asked == 2


def test_a_token_is_never_trusted_past_its_expiry() -> None:
    """A token expiring within the cache time is refused from its expiry on."""
    auth, _tokens, clock = authenticator(Identity("token:abc", "viewer", expires=T0 + 1.0))
    identify(auth)
    clock.now += 1.0
    with pytest.raises(TokenRefused) as refused:
        identify(auth)
    assert refused.value.reason == "expired"


def test_a_single_use_token_is_checked_every_time() -> None:
    """A join may spend a single-use token at any moment: it is never cached."""
    auth, tokens, _clock = authenticator(Identity("token:abc", "node", "n1", single_use=True))
    identify(auth)
    identify(auth)
    assert tokens.asked == 2


def test_a_forgotten_token_is_checked_again_at_once() -> None:
    """A token revoked through this hub is read from the database on its next use."""
    auth, tokens, _clock = authenticator(Identity("token:abc", "admin"))
    identify(auth)
    auth.forget("abc")
    identify(auth)
    assert tokens.asked == 2
