"""The rate limit on the real engine: `ucs plugin test docs/examples/rate_limit`."""

import pytest

from constants import AGENT_AUX, AGENT_READY
from error import ProcessingError
from ucs_testing import UcsServer


def test_changes_under_the_limit_go_through(ucs_server: UcsServer) -> None:
    alice = ucs_server.add_agent('alice')
    for _ in range(5):
        ucs_server.set_status(alice, AGENT_READY)
    assert ucs_server.agent(alice)['status'] == AGENT_READY
    assert len(ucs_server.events('agent.status')) == 5


def test_the_change_past_the_limit_is_refused_and_logged(ucs_server: UcsServer) -> None:
    alice = ucs_server.add_agent('alice')
    for _ in range(5):
        ucs_server.set_status(alice, AGENT_READY)
    ucs_server.clear()
    with pytest.raises(ProcessingError, match='too many status changes'):
        ucs_server.set_status(alice, AGENT_AUX, 'Lunch')
    assert ucs_server.agent(alice)['status'] == AGENT_READY
    assert ucs_server.events('agent.status') == []
    [warning] = ucs_server.logs(plugin='rate_limit', level='WARN')
    assert 'refused' in warning.message


def test_agents_are_limited_one_by_one(ucs_server: UcsServer) -> None:
    alice = ucs_server.add_agent('alice')
    bob = ucs_server.add_agent('bob')
    for _ in range(5):
        ucs_server.set_status(alice, AGENT_READY)
    ucs_server.set_status(bob, AGENT_READY)
    assert ucs_server.agent(bob)['status'] == AGENT_READY


@pytest.mark.ucs_config(rate_limit={'max_changes': 1})
def test_the_limit_comes_from_the_plugin_settings(ucs_server: UcsServer) -> None:
    alice = ucs_server.add_agent('alice')
    ucs_server.set_status(alice, AGENT_READY)
    with pytest.raises(ProcessingError):
        ucs_server.set_status(alice, AGENT_AUX, 'Lunch')


def test_an_agent_changes_its_own_status_through_the_limit_too(ucs_server: UcsServer) -> None:
    alice = ucs_server.add_agent('alice')
    for _ in range(5):
        ucs_server.set_status(alice, AGENT_READY, user='alice')
    with pytest.raises(ProcessingError):
        ucs_server.set_status(alice, AGENT_READY, user='alice')
