"""The keeper's HTTP server: its status, attestations, proofs, archive and the signature exchange."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlparse

from eth_utils import is_address, to_checksum_address

from keeper.data.archive import InputsArchive, normalize_hash
from keeper.errors import SignatureRejected
from keeper.exchange.book import (
    KINDS,
    MAX_BODY,
    SignatureBook,
    hex_to_bytes,
    to_jsonable,
)


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
        self.quote_sets: dict[tuple[int, str], dict] = {}  # (block, asset) -> quote-set document it proposed

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

    def publish_quote_set(self, block: int, asset: str, document: dict) -> None:
        """Offer the quote set this keeper proposes for ``block`` (keeper.data.agreement); keeps the last ``keep``
        blocks."""
        with self._lock:
            self.quote_sets[(int(block), asset.lower())] = document
            cutoff = int(block) - self.keep
            for k in [k for k in self.quote_sets if k[0] <= cutoff]:
                del self.quote_sets[k]

    def quote_set(self, block: int, asset: str) -> Optional[dict]:
        with self._lock:
            return self.quote_sets.get((int(block), asset.lower()))

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
            if len(parts) == 3 and parts[0] == "quotes":
                if not is_address(parts[2]):
                    return self._error(400, "bad_address", parts[2])
                qs = srv.view.quote_set(int(parts[1]), parts[2])
                if qs is None:
                    return self._error(404, "no_quote_set", f"{parts[1]}/{parts[2]}")
                return self._send(200, qs)
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
            signature = hex_to_bytes(body["signature"])
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


