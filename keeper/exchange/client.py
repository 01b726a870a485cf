"""The client a keeper uses to fetch and post signatures to its peers."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import requests
from eth_utils import to_checksum_address

from keeper.exchange.book import hex_to_bytes, to_jsonable


# ------------------------------------------------------------------------------------------------------------
# Peer client
# ------------------------------------------------------------------------------------------------------------
class PeerClient:
    """Talks to one peer keeper's HTTP API; every method returns ``None`` (never raises) when the peer is down."""

    def __init__(self, name: str, url: str, address: Optional[str] = None, timeout: float = 2.0) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.address = to_checksum_address(address) if address else None
        self.timeout = timeout
        self.session = requests.Session()
        self.up: Optional[bool] = None

    def _get(self, path: str, raw: bool = False) -> Any:
        try:
            r = self.session.get(self.url + path, timeout=self.timeout)
        except requests.RequestException:
            self.up = False
            return None
        self.up = True
        if r.status_code != 200:
            return None
        return r.content if raw else r.json()

    def health(self) -> Optional[dict]:
        return self._get("/health")

    def status(self) -> Optional[dict]:
        return self._get("/status")

    def signatures(self, kind: str, sequence: int) -> Optional[list[tuple[dict, bytes, str]]]:
        """``[(message, signature, claimed_signer)]`` the peer holds for (kind, sequence)."""
        got = self._get(f"/signatures/{kind}/{int(sequence)}")
        if got is None:
            return None
        out = []
        for e in got.get("entries", []):
            for signer, sig in (e.get("signatures") or {}).items():
                try:
                    out.append((e["message"], hex_to_bytes(sig), signer))
                except (ValueError, KeyError):
                    continue
        return out

    def post_signature(self, kind: str, message: Mapping[str, Any], signature: bytes) -> Optional[int]:
        """POST our signature; returns the HTTP status or ``None`` when the peer is down."""
        body = {"kind": kind, "message": to_jsonable(message), "signature": "0x" + bytes(signature).hex()}
        try:
            r = self.session.post(self.url + "/signatures", json=body, timeout=self.timeout)
        except requests.RequestException:
            self.up = False
            return None
        self.up = True
        return r.status_code

    def attestation(self, sequence: int) -> Optional[dict]:
        return self._get(f"/attestation/{int(sequence)}")

    def margin(self, account: str, sequence: Optional[int] = None) -> Optional[dict]:
        """The account's leaf and proof in the peer's attestation of ``sequence`` (default: the latest root on chain
        the peer attested, else its latest), or ``None``."""
        return self._get(f"/margin/{account}" + ("" if sequence is None else f"?sequence={int(sequence)}"))

    def quote_set(self, block: int, asset: str) -> Optional[dict]:
        """The quote set the peer proposed for (block, asset), or ``None`` (none yet, or the peer is down)."""
        return self._get(f"/quotes/{int(block)}/{asset}")

    def archive(self, inputs_hash: str) -> Optional[bytes]:
        return self._get(f"/archive/{inputs_hash}", raw=True)


def diff_leaves(mine: list[dict], theirs: list[dict], key: str = "account") -> dict[str, list]:
    """Compare two leaf lists by account: ``only_mine``, ``only_theirs`` and ``differ`` (account, field, mine,
    theirs) - what a keeper logs when a peer signed a different root."""
    a = {str(l[key]).lower(): l for l in mine}
    b = {str(l[key]).lower(): l for l in theirs}
    differ = []
    for acct in sorted(set(a) & set(b)):
        for f in sorted((set(a[acct]) | set(b[acct])) - {key}):
            if a[acct].get(f) != b[acct].get(f):
                differ.append((acct, f, a[acct].get(f), b[acct].get(f)))
    return {"only_mine": sorted(set(a) - set(b)), "only_theirs": sorted(set(b) - set(a)), "differ": differ}


