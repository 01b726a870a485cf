def test_setup(core, accounts):
    v = accounts[1]
    core.build_book(v)
    assert len(core.chx.seriesOf(v)) == 5
