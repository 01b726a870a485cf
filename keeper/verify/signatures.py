"""Checks of what keepers posted: signers recovered from a batch of signatures, a posted batch decoded
from its transaction, and the attestation behind a recorded breach."""
from __future__ import annotations

from typing import Any

from keeper.codec.eip712 import margin_root_struct_hash, solvency_index_from
from keeper.codec.merkle import MarginLeaf, process_multiproof
from keeper.ops.signing import recover_signers

def decode_batch(ch, tx_input: bytes) -> dict | None:
    """Decode a ``postMarginBatch``/``postMarginRoot`` call: header, leaves (batch only), signatures."""
    try:
        fn, args = ch.decode_function_input(tx_input)
    except ValueError:
        return None
    name = fn.fn_name
    if name == "postMarginBatch":
        h = args["header"]
        return {"kind": "batch", "header": h, "solvency_hash": bytes(args["solvencyHash"]),
                "solvency": solvency_index_from(args["solvency"]), "leaves": [MarginLeaf.from_tuple(x) for x in args["leaves"]],
                "proof": [bytes(x) for x in args["proof"]], "flags": [bool(x) for x in args["proofFlags"]],
                "signatures": bytes(args["signatures"])}
    if name == "postMarginRoot":
        return {"kind": "root", "header": args["header"], "root": bytes(args["root"]), "leaves": [],
                "solvency_hash": bytes(args["solvencyHash"]), "solvency": solvency_index_from(args["solvency"]),
                "signatures": bytes(args["signatures"])}
    return None


def _h(x) -> tuple:
    """Header struct (dict or tuple) -> (inputsHash bytes, sequence, timestamp, leafCount)."""
    if isinstance(x, dict):
        return bytes(x["inputsHash"]), int(x["sequence"]), int(x["timestamp"]), int(x["leafCount"])
    return bytes(x[0]), int(x[1]), int(x[2]), int(x[3])


def check_attestation_for_breach(w3, ch, breach_event, keepers: set[str], threshold: int) -> dict:
    """Everything about the attestation behind one ``AccountBreached`` event (read from its transaction)."""
    tx = w3.eth.get_transaction(breach_event["transactionHash"])
    out = check_attestation(ch, bytes(tx["input"]), breach_event["args"], keepers, threshold)
    out["block"] = int(breach_event["blockNumber"])
    return out


def check_attestation(ch, calldata: bytes, breach_args, keepers: set[str], threshold: int) -> dict:
    """The attestation a breach record (``AccountBreached`` args) came from, checked from the calldata that posted
    it: the root the posted leaves and multiproof lead to (batch) or the posted root, whether it is the event's
    root, the account's leaf in it, and the distinct registered keepers whose signatures over the EIP-712
    ``MarginRoot`` digest (the contract's own ``hashTypedData``) recover; ``ok`` when M of them signed."""
    a = breach_args
    out: dict[str, Any] = {"account": a["account"], "ok": False, "signers": []}
    dec = decode_batch(ch, calldata)
    if dec is None:
        out["problem"] = "breach not registered by a margin batch transaction"
        return out
    ih, seq, ts, count = _h(dec["header"])
    leaf = MarginLeaf(a["account"], int(a["stateNonce"]), int(a["equity"]), int(a["maintenance"]), int(a["initial"]),
                      int(a["modelValue"]))
    if dec["kind"] == "batch":
        # the root the posted leaves and multiproof lead to (all leaves: empty proof; some leaves: a real proof)
        try:
            root = process_multiproof([x.hash() for x in dec["leaves"]], dec["proof"], dec["flags"])
        except (ValueError, IndexError) as e:
            out.update(leaf=leaf, problem=f"the posted multiproof does not evaluate: {e}")
            return out
        in_tree = leaf in dec["leaves"]
    else:
        root, in_tree = dec["root"], True
    digest = bytes(ch.functions.hashTypedData(margin_root_struct_hash(root, ih, seq, ts, count,
                                                                      dec["solvency_hash"])).call())
    try:
        signers = recover_signers(digest, dec["signatures"])
    except Exception as e:  # noqa: BLE001 - malformed signature bytes (length, s, v): no signer
        signers = []
        out["problem"] = f"signatures unreadable: {e}"
    valid = {s for s in signers if s in keepers}
    out.update(root="0x" + root.hex(), root_matches_event=root == bytes(a["root"]), leaf_in_tree=in_tree,
               inputs_hash="0x" + ih.hex(), signers=sorted(valid), leaf=leaf, signatures=len(signers))
    out["ok"] = bool(out["root_matches_event"] and in_tree and len(valid) >= threshold
                     and ih == bytes(a["inputsHash"]))
    return out
