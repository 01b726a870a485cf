import pytest


@pytest.mark.ganache
def test_probe(ToolchainProbe, accounts, chain):
    c = ToolchainProbe.deploy({"from": accounts[0]})
    a, cid = c.f(10)
    assert (int(a), int(cid)) == (15, chain.id)
    assert a == 15
