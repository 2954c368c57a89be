"""The shutdown chain: Uvicorn graceful shutdown < gunicorn graceful_timeout < TimeoutStopSec."""

import pytest


@pytest.mark.parametrize("graceful", list(range(2, 121)) + [180, 300, 600, 3600])
def test_derived_timeouts_nest(sizing, graceful):
    chain = sizing.timeout_chain(graceful)
    assert chain["problems"] == []
    assert 0 < chain["uvicorn"] < chain["gunicorn"] == graceful < chain["systemd"]
    # Each layer gets at least a second before the next one acts, and never more than 10.
    assert 1 <= graceful - chain["uvicorn"] <= 10
    assert 2 <= chain["systemd"] - graceful <= 20


def test_baseline_values(sizing):
    assert sizing.timeout_chain(30) == {"uvicorn": 25, "gunicorn": 30, "systemd": 40, "problems": []}


@pytest.mark.parametrize(
    "graceful, uvicorn, stop",
    [(30, 10, None), (30, None, 90), (30, 29, 31), (60, 1, 61)],
)
def test_explicit_values_that_nest_are_kept(sizing, graceful, uvicorn, stop):
    chain = sizing.timeout_chain(graceful, uvicorn, stop)
    assert chain["problems"] == []
    assert chain["uvicorn"] == (uvicorn if uvicorn is not None else chain["uvicorn"])
    assert chain["systemd"] == (stop if stop is not None else chain["systemd"])


@pytest.mark.parametrize(
    "graceful, uvicorn, stop",
    [(30, 30, None), (30, 45, None), (30, None, 30), (30, None, 20), (30, 0, None), (1, None, None),
     (0, None, None)],
)
def test_values_that_do_not_nest_are_refused(sizing, graceful, uvicorn, stop):
    chain = sizing.timeout_chain(graceful, uvicorn, stop)
    assert len(chain["problems"]) == 1
    assert "asgi_app_graceful_timeout" in chain["problems"][0]
    if graceful >= 2:
        # The message shows the values as they would be.
        assert f"{chain['uvicorn']} < {graceful} < {chain['systemd']}" in chain["problems"][0]
