"""A proposer's quote set over real HTTP (GET /quotes/<block>/<asset>): what a peer fetches is the document the
proposer published, hash for hash; absent sets, bad addresses and a stopped peer give None or a 4xx, never a crash."""
from __future__ import annotations

import pytest
import requests
from eth_account import Account
from eth_utils import keccak

from keeper.attest.agreement import QuoteSet, check_quote_set, quote_set_document, quote_set_from_document, quote_set_hash
from keeper.data.deribit import load_deribit_csv
from keeper.exchange.book import SignatureBook
from keeper.exchange.client import PeerClient
from keeper.exchange.codec import TypedDataCodec
from keeper.exchange.server import ExchangeServer, KeeperView

ASSET = "0x" + "cd" * 20
KEY = Account.from_key(keccak(text="keeper-quote-set"))


@pytest.fixture
def proposer():
    server = ExchangeServer(SignatureBook(TypedDataCodec(31337, "0x" + "ab" * 20), [KEY.address]),
                            KeeperView(KEY.address, keep=4)).start()
    yield server
    server.stop()


def test_a_peer_fetches_the_proposed_set_unchanged(proposer, shared_data):
    chain = load_deribit_csv(shared_data / "option_chains" / "deribit_BTC_20200514T0541Z.csv").chain
    doc = quote_set_document(QuoteSet(ASSET, 41, chain.spot, chain))
    proposer.view.publish_quote_set(41, ASSET.upper().replace("0X", "0x"), doc)
    client = PeerClient("proposer", proposer.url)
    got = client.quote_set(41, ASSET)
    assert got is not None and quote_set_hash(got) == quote_set_hash(doc)
    fetched = quote_set_from_document(got)
    assert check_quote_set(fetched, QuoteSet(ASSET, 41, chain.spot, chain)).accepted
    assert client.quote_set(42, ASSET) is None  # nothing proposed for that block
    r = requests.get(proposer.url + "/quotes/41/0x12")
    assert r.status_code == 400 and r.json()["error"] == "bad_address"
    r = requests.get(proposer.url + "/quotes/x/" + ASSET)
    assert r.status_code == 400


def test_only_the_last_blocks_are_kept_and_a_stopped_peer_gives_none(proposer):
    for block in range(10, 20):
        proposer.view.publish_quote_set(block, ASSET, {"schema": "backstop-quote-set/1", "block": block})
    client = PeerClient("proposer", proposer.url, timeout=0.5)
    assert client.quote_set(19, ASSET)["block"] == 19
    assert client.quote_set(15, ASSET) is None  # keep=4: blocks 16-19 are served
    assert client.quote_set(16, ASSET)["block"] == 16
    url = proposer.url
    proposer.stop()
    assert PeerClient("proposer", url, timeout=0.5).quote_set(19, ASSET) is None
