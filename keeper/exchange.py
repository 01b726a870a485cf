"""Signature exchange between keepers: the signature book, the HTTP API each keeper serves, the peer client, and
the submitter rotation.

HTTP API (JSON unless noted; see ``docs/keeper.md``):

==========================================  ===================================================================
``GET  /health``                            ``{"status": "ok", "address", "block"}``
``GET  /status``                            the keeper's view: block, spot, surface fit, near-margin accounts, peers
``GET  /signatures/<kind>/<sequence>``      every message of that kind and sequence with the signatures held
``POST /signatures``                        ``{"kind", "message", "signature"}``: stored only if it recovers to a
                                            registered keeper over the typed-data digest of ``message``
``GET  /attestation/<sequence>``            header, root and the leaf list of the keeper's own attestation
``GET  /margin/<account>[?sequence=N]``     the account's leaf, header, values and Merkle proof in the latest
                                            root that is on chain (else the latest root)
``GET  /archive/<inputsHash>``              the canonical inputs file (``application/json`` bytes)
==========================================  ===================================================================

``kind`` is ``margin`` (``MarginRoot``), ``prices`` (``Prices``) or ``settlement`` (``SettlementPrices``), the
typed data of ``docs/contracts.md``. Messages travel as JSON with ``bytes32``/``address`` as ``0x`` hex and
integers as JSON integers.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

import requests
from eth_account import Account
from eth_utils import is_address, to_checksum_address

from keeper import eip712 as _eip712
from keeper.archive import InputsArchive, normalize_hash

KINDS = ("margin", "prices", "settlement")
MAX_BODY = 64 * 1024


class Codec(Protocol):
    """Turns a message of a kind into its EIP-712 digest (the thing keepers sign and the contract verifies)."""

    def digest(self, kind: str, message: Mapping[str, Any]) -> bytes: ...


class SignatureRejected(ValueError):
    """A signature that is not stored; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def recover_signer(digest: bytes, signature: bytes) -> str:
    """Address that signed the 32-byte ``digest`` (65-byte ``r||s||v`` signature)."""
    return Account._recover_hash(digest, signature=signature)


def sign_digest(account, digest: bytes) -> bytes:
    """Sign a 32-byte digest with an eth-account ``LocalAccount`` (low-s, ``v`` in {27, 28})."""
    return bytes(account.unsafe_sign_hash(digest).signature)


def _seq_of(kind: str, message: Mapping[str, Any]) -> int:
    key = "expiry" if kind == "settlement" else "sequence"
    return int(message[key])


@dataclass
class _Entry:
    message: dict
    sigs: dict = field(default_factory=dict)  # signer -> signature bytes


class SignatureBook:
    """Signatures held per (kind, sequence) and digest; thread-safe. Only registered keepers' signatures over the
    recomputed digest of the message they came with are stored."""

    def __init__(self, codec: Codec, keepers: Iterable[str], keep: int = 256) -> None:
        self.codec = codec
        self.keepers = {to_checksum_address(k) for k in keepers}
        self.keep = keep
        self._lock = threading.Lock()
        self._book: dict[tuple[str, int], dict[bytes, _Entry]] = {}

    def set_keepers(self, keepers: Iterable[str]) -> None:
        """Replace the registered keeper set (e.g. after a ``KeeperAdded``/``KeeperRemoved`` event)."""
        with self._lock:
            self.keepers = {to_checksum_address(k) for k in keepers}

    def add(self, kind: str, message: Mapping[str, Any], signature: bytes) -> str:
        """Verify and store; returns the signer. Raises :class:`SignatureRejected`."""
        if kind not in KINDS:
            raise SignatureRejected("bad_kind", f"unknown kind {kind!r}")
        try:
            digest = self.codec.digest(kind, message)
            seq = _seq_of(kind, message)
        except Exception as exc:
            raise SignatureRejected("bad_message", str(exc)) from None
        if len(signature) != 65:
            raise SignatureRejected("bad_signature", f"signature is {len(signature)} bytes, expected 65")
        try:
            signer = recover_signer(digest, signature)
        except Exception as exc:
            raise SignatureRejected("bad_signature", str(exc)) from None
        if signer not in self.keepers:
            raise SignatureRejected("not_a_keeper", f"{signer} is not a registered keeper")
        with self._lock:
            slot = self._book.setdefault((kind, seq), {})
            entry = slot.setdefault(digest, _Entry(dict(message)))
            entry.sigs[signer] = bytes(signature)
            self._prune(kind)
        return signer

    def _prune(self, kind: str) -> None:
        seqs = sorted(s for (k, s) in self._book if k == kind)
        for s in seqs[:-self.keep] if len(seqs) > self.keep else []:
            del self._book[(kind, s)]

    def entries(self, kind: str, sequence: int) -> list[tuple[bytes, dict, dict]]:
        """``[(digest, message, {signer: signature})]`` held for (kind, sequence)."""
        with self._lock:
            slot = self._book.get((kind, sequence), {})
            return [(d, dict(e.message), dict(e.sigs)) for d, e in slot.items()]

    def count(self, kind: str, sequence: int, digest: bytes) -> int:
        """Signatures held over ``digest``."""
        with self._lock:
            e = self._book.get((kind, sequence), {}).get(digest)
            return len(e.sigs) if e else 0

    def quorum(self, kind: str, sequence: int, digest: bytes, m: int) -> Optional[bytes]:
        """The concatenated signatures of ``m`` keepers over ``digest``, signers strictly ascending (as the contract
        requires), or ``None`` while fewer than ``m`` are held."""
        with self._lock:
            e = self._book.get((kind, sequence), {}).get(digest)
            if e is None or len(e.sigs) < m:
                return None
            signers = sorted(e.sigs, key=lambda a: int(a, 16))[:m]
            return b"".join(e.sigs[s] for s in signers)

    def equivocators(self, kind: str, sequence: int) -> set[str]:
        """Keepers that signed two different messages of the same kind and sequence."""
        seen: dict[str, int] = {}
        for _d, _m, sigs in self.entries(kind, sequence):
            for s in sigs:
                seen[s] = seen.get(s, 0) + 1
        return {s for s, n in seen.items() if n > 1}


# ------------------------------------------------------------------------------------------------------------
# Submitter rotation
# ------------------------------------------------------------------------------------------------------------
def rotation_order(sequence: int, keepers: Iterable[str]) -> list[str]:
    """Keepers in submission order for ``sequence``: sorted by address, starting at index ``sequence % n``."""
    ks = sorted({to_checksum_address(k) for k in keepers}, key=lambda a: int(a, 16))
    if not ks:
        return []
    i = sequence % len(ks)
    return ks[i:] + ks[:i]


def submit_delay_blocks(me: str, sequence: int, keepers: Iterable[str], up: Iterable[str],
                        takeover_blocks: int) -> int:
    """Blocks after ``sequence`` that keeper ``me`` waits before submitting: its position in the rotation among
    the keepers currently up (``me`` always counts as up) times ``takeover_blocks``. The designated submitter waits
    0; when it is down the next one up takes its place at once, and when it is silently stuck, the next takes over
    after ``takeover_blocks``."""
    me = to_checksum_address(me)
    alive = {to_checksum_address(u) for u in up} | {me}
    order = [k for k in rotation_order(sequence, keepers) if k in alive]
    if me not in order:
        raise ValueError(f"{me} is not a registered keeper")
    return order.index(me) * takeover_blocks


def should_submit(me: str, sequence: int, current_block: int, keepers: Iterable[str], up: Iterable[str],
                  takeover_blocks: int) -> bool:
    """True when ``me`` should submit the attestation of ``sequence`` at ``current_block``."""
    return current_block - sequence >= submit_delay_blocks(me, sequence, keepers, up, takeover_blocks)


# ------------------------------------------------------------------------------------------------------------
# JSON helpers
# ------------------------------------------------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """bytes -> 0x hex, tuples -> lists, recursively."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def _hexbytes(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise ValueError("expected 0x hex")
    return bytes.fromhex(text[2:])


# ------------------------------------------------------------------------------------------------------------
# HTTP server
# ------------------------------------------------------------------------------------------------------------
class KeeperView:
    """What the HTTP API shows: thread-safe holder updated by the keeper's cycle.

    ``attestations`` maps sequence to a dict with ``header``, ``root``, ``leaves`` (list of dicts) and an optional
    ``proof(account) -> (leaf, [bytes32])`` callable (not serialized)."""

    def __init__(self, address: str, keep: int = 64) -> None:
        self.address = address
        self.keep = keep
        self._lock = threading.Lock()
        self.status: dict[str, Any] = {"block": None}
        self.attestations: dict[int, dict] = {}
        self.latest_sequence: Optional[int] = None

    def update_status(self, **fields: Any) -> None:
        with self._lock:
            self.status.update(fields)

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.status)

    def publish(self, sequence: int, attestation: dict) -> None:
        with self._lock:
            self.attestations[sequence] = attestation
            self.latest_sequence = sequence if self.latest_sequence is None else max(self.latest_sequence, sequence)
            for s in sorted(self.attestations)[:-self.keep] if len(self.attestations) > self.keep else []:
                del self.attestations[s]

    def attestation(self, sequence: Optional[int] = None) -> Optional[dict]:
        with self._lock:
            seq = self.latest_sequence if sequence is None else sequence
            return None if seq is None else self.attestations.get(seq)


class _Handler(BaseHTTPRequestHandler):
    server_version = "BackstopKeeper/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # route through the exchange's logger, not stderr
        log = getattr(self.server, "log", None)
        if log is not None:
            log.debug("http", line=fmt % args)

    def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(to_jsonable(body), sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, code: int, reason: str, detail: str = "") -> None:
        self._send(code, {"error": reason, "detail": detail})

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        srv: ExchangeServer = self.server.exchange  # type: ignore[attr-defined]
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        try:
            if parts == ["health"]:
                return self._send(200, {"status": "ok", "address": srv.view.address,
                                        "block": srv.view.snapshot().get("block")})
            if parts == ["status"]:
                return self._send(200, {**srv.view.snapshot(), "address": srv.view.address})
            if len(parts) == 3 and parts[0] == "signatures":
                kind, seq = parts[1], int(parts[2])
                if kind not in KINDS:
                    return self._error(404, "bad_kind", kind)
                items = [{"digest": d, "message": m, "signatures": sigs}
                         for d, m, sigs in srv.book.entries(kind, seq)]
                return self._send(200, {"kind": kind, "sequence": seq, "entries": items})
            if len(parts) == 2 and parts[0] == "attestation":
                att = srv.view.attestation(None if parts[1] == "latest" else int(parts[1]))
                if att is None:
                    return self._error(404, "unknown_sequence", parts[1])
                return self._send(200, {k: v for k, v in att.items() if not callable(v)})
            if len(parts) == 2 and parts[0] == "margin":
                if not is_address(parts[1]):
                    return self._error(400, "bad_address", parts[1])
                account = to_checksum_address(parts[1])
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)
                if "sequence" in q:
                    att = srv.view.attestation(int(q["sequence"][0]))
                else:  # the latest root that is on chain (usable with recordMargin/withdraw), else the latest
                    posted = srv.view.snapshot().get("last_margin_sequence")
                    att = (srv.view.attestation(int(posted)) if posted else None) or srv.view.attestation()
                if att is None:
                    return self._error(404, "no_attestation", "no attestation yet")
                prover = att.get("proof")
                got = prover(account) if callable(prover) else None
                if got is None:
                    return self._error(404, "unknown_account", account)
                leaf, proof = got[0], got[1]
                values = got[2] if len(got) > 2 else {}
                return self._send(200, {"account": account, "header": att["header"], "root": att["root"],
                                        "leaf": leaf, "proof": proof, "values": values})
            if len(parts) == 2 and parts[0] == "archive":
                h = normalize_hash(parts[1])
                blob = srv.archive.get(h) if (h and srv.archive is not None) else None
                if blob is None:
                    return self._error(404, "unknown_inputs_hash", parts[1])
                return self._send(200, blob)
            return self._error(404, "not_found", self.path)
        except ValueError as exc:
            return self._error(400, "bad_request", str(exc))

    def do_POST(self) -> None:  # noqa: N802
        srv: ExchangeServer = self.server.exchange  # type: ignore[attr-defined]
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts != ["signatures"]:
            return self._error(404, "not_found", self.path)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._error(400, "bad_request", "bad Content-Length")
        if n <= 0 or n > MAX_BODY:
            return self._error(413 if n > MAX_BODY else 400, "bad_request", f"body of {n} bytes")
        try:
            body = json.loads(self.rfile.read(n))
            kind = body["kind"]
            message = body["message"]
            signature = _hexbytes(body["signature"])
            if not isinstance(message, dict):
                raise ValueError("message must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            return self._error(400, "bad_request", f"malformed body: {exc}")
        try:
            signer = srv.book.add(kind, message, signature)
        except SignatureRejected as exc:
            if srv.on_reject is not None:
                srv.on_reject(exc.reason)
            return self._error(403 if exc.reason == "not_a_keeper" else 400, exc.reason, str(exc))
        return self._send(201, {"stored": True, "signer": signer})


class _TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its open connections so ``stop`` can close them."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self._conns: set = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request, client_address):  # noqa: ANN001
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # noqa: ANN001
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        import socket

        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ExchangeServer:
    """The keeper's HTTP API on ``host:port`` (port 0 picks a free one) in a background thread."""

    def __init__(self, book: SignatureBook, view: KeeperView, archive: Optional[InputsArchive] = None,
                 host: str = "127.0.0.1", port: int = 0, log: Any = None,
                 on_reject: Optional[Callable[[str], None]] = None) -> None:
        self.book = book
        self.view = view
        self.archive = archive
        self.on_reject = on_reject
        self.httpd = _TrackingServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.exchange = self  # type: ignore[attr-defined]
        self.httpd.log = log  # type: ignore[attr-defined]
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ExchangeServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="keeper-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open (keep-alive) connection, as a dead process would."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)


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
                    out.append((e["message"], _hexbytes(sig), signer))
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

    def margin(self, account: str) -> Optional[dict]:
        return self._get(f"/margin/{account}")

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


# ------------------------------------------------------------------------------------------------------------
# EIP-712 digests of the three attested messages (docs/contracts.md)
# ------------------------------------------------------------------------------------------------------------
TYPES = {  # the type strings are keeper/eip712.py's (docs/contracts.md)
    "margin": ("MarginRoot", _eip712.MARGIN_ROOT_TYPE),
    "prices": ("Prices", _eip712.PRICES_TYPE),
    "settlement": ("SettlementPrices", _eip712.SETTLEMENT_PRICES_TYPE),
}


def _typed_value(typ: str, value: Any) -> Any:
    if typ == "bytes32":
        b = value if isinstance(value, (bytes, bytearray)) else _hexbytes(value)
        if len(b) != 32:
            raise ValueError(f"bytes32 value has {len(b)} bytes")
        return bytes(b)
    if typ == "address":
        if not is_address(value):
            raise ValueError(f"not an address: {value!r}")
        return to_checksum_address(value)
    if typ.endswith("[]"):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{typ} value must be a list")
        return [_typed_value(typ[:-2], v) for v in value]
    if typ.startswith(("uint", "int")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{typ} value must be an integer, got {value!r}")
        bits = int(typ.lstrip("uint") or 256)
        lo, hi = (0, 2**bits - 1) if typ.startswith("uint") else (-(2**(bits - 1)), 2**(bits - 1) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"{value} out of range for {typ}")
        return value
    raise ValueError(f"unsupported type {typ}")


class TypedDataCodec:
    """EIP-712 digests with domain ``("Backstop", "1", chainId, Clearinghouse)`` and the exact type strings of
    ``docs/contracts.md``, through eth-account's ``encode_typed_data``. ``keeper/eip712.py`` (the contracts side)
    builds the same; the integration tests compare both with the contract's ``hashTypedData``."""

    def __init__(self, chain_id: int, verifying_contract: str, name: str = "Backstop", version: str = "1") -> None:
        self.domain = _eip712.Domain(int(chain_id), verifying_contract, name, version).as_dict()

    def typed_data(self, kind: str, message: Mapping[str, Any]) -> dict:
        """The full EIP-712 structure (``domain``, ``types``, ``primaryType``, ``message``) for a message."""
        if kind not in TYPES:
            raise ValueError(f"unknown kind {kind!r}")
        primary, fields = TYPES[kind]
        extra = set(message) - {f["name"] for f in fields}
        if extra:
            raise ValueError(f"unexpected fields {sorted(extra)}")
        msg = {f["name"]: _typed_value(f["type"], message[f["name"]]) for f in fields}
        if kind != "margin" and len(msg[fields[0]["name"]]) != len(msg["prices"]):
            raise ValueError("assets and prices differ in length")
        return {"types": {"EIP712Domain": _eip712.EIP712_DOMAIN_TYPE, primary: fields},
                "domain": self.domain, "primaryType": primary, "message": msg}

    def digest(self, kind: str, message: Mapping[str, Any]) -> bytes:
        """The 32-byte EIP-712 digest of a message (:func:`keeper.eip712.digest`)."""
        return _eip712.digest(self.typed_data(kind, message))

    def sign(self, kind: str, message: Mapping[str, Any], account) -> bytes:
        """This keeper's 65-byte signature of a message (:func:`keeper.eip712.sign`)."""
        return _eip712.sign(self.typed_data(kind, message), account.key)
