// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {KeeperSet} from "./KeeperSet.sol";
import {IAttestationOracle} from "./interfaces/IAttestationOracle.sol";
import {
    AccountState,
    BackstopTypes,
    BreachRecord,
    MarginLeaf,
    MarginProof,
    MarginRootHeader,
    SolvencyIndex,
    SolvencyRecord
} from "./libraries/BackstopTypes.sol";

/// @title AttestationOracle
/// @notice Keeper-attested spot prices, settlement prices and per-account margin state (Merkle roots), the
/// per-account stateNonce that binds an attestation to a portfolio, and the breach registry.
abstract contract AttestationOracle is KeeperSet, IAttestationOracle {
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ types

    struct PricePoint {
        uint192 price; // [wad quote units per whole asset unit]
        uint64 timestamp; // [unix seconds] observation time
    }

    // ------------------------------------------------------------------ constants

    /// @notice Number of margin root commitments kept; `ring[sequence % ROOT_RING_SIZE]`.
    uint256 public constant ROOT_RING_SIZE = 16;
    /// @notice How far ahead of the chain an attestation's timestamp may be [seconds].
    uint256 public constant MAX_FUTURE_SKEW = 15;

    // ------------------------------------------------------------------ storage

    mapping(address account => AccountState) internal _accounts;
    mapping(address account => BreachRecord) internal _breaches;
    bytes32[ROOT_RING_SIZE] internal _rootRing;
    mapping(address asset => PricePoint) internal _spot;
    mapping(address underlying => mapping(uint64 expiry => uint256)) internal _settlementPrice;
    SolvencyRecord internal _solvency;

    // ------------------------------------------------------------------ internal functions

    /// @dev Accepts a signed margin root with its solvency index. The index is required with every root: the signed
    /// `MarginRoot` carries `solvencyHash`, and the posted `solvency` must hash to it (`AO_SolvencyIndexMismatch`), so
    /// the record below always holds what the keepers signed. A root already on record (same commitment in its ring
    /// slot) stores nothing again.
    function _acceptMarginRoot(
        bytes32 root,
        MarginRootHeader calldata h,
        bytes32 solvencyHash,
        SolvencyIndex calldata solvency,
        bytes calldata signatures
    ) internal {
        Config memory c = _config;
        uint64 ts = h.timestamp;
        uint64 seq = h.sequence;
        _checkFresh(ts, c.maxAttestationAge);
        bytes32 posted = BackstopTypes.solvencyStructHash(solvency);
        if (posted != solvencyHash) revert AO_SolvencyIndexMismatch(solvencyHash, posted);
        bytes32 commitment = BackstopTypes.marginRootCommitment(root, h);
        // A root already on record (same commitment in its ring slot) accepts further leaves without a second
        // signature check: whoever posted it first (e.g. a copy of the keepers' batch from the mempool, root-only
        // or with a chosen subset of leaves) cannot make the keepers' own batch revert (review finding L-7).
        if (_rootRing[seq % ROOT_RING_SIZE] == commitment) return;
        if (seq <= c.lastMarginSequence) revert AO_AttestationReplayed(seq, c.lastMarginSequence);
        if (ts < c.lastMarginTimestamp) revert AO_AttestationOlder(ts, c.lastMarginTimestamp);
        _verifySignatures(
            _hashTypedDataV4(BackstopTypes.marginRootStructHash(root, h, solvencyHash)), signatures, c.threshold
        );
        if (seq > type(uint40).max) revert AO_AttestationReplayed(seq, c.lastMarginSequence);
        _advanceMarginClock(seq, ts);
        _rootRing[seq % ROOT_RING_SIZE] = commitment;
        emit MarginRootPosted(seq, root, h.inputsHash, ts, h.leafCount);
        _storeSolvency(solvency, seq, ts);
    }

    /// @dev Records root (`seq`, `ts`) as the last one; `ts` is not older than the last (checked) and
    /// <= block.timestamp + 15, so it fits uint32 (until 2106). Tracks how long ago a second held two roots (H-10).
    function _advanceMarginClock(uint64 seq, uint64 ts) private {
        Config storage cs = _config;
        uint256 last = cs.lastMarginTimestamp;
        uint256 ago = ts == last ? 0 : cs.sharedSecondAgo + (ts - last);
        if (ago > MAX_SHARED_AGO) ago = MAX_SHARED_AGO;
        (cs.lastMarginSequence, cs.lastMarginTimestamp, cs.sharedSecondAgo) = (uint40(seq), uint32(ts), uint8(ago));
    }

    /// @dev Stores `s` (already matched to the signed hash, so every word is its field's clean encoding) packed as
    /// `SolvencyRecord` (five slots) and emits `SolvencyIndexPosted`. Assembly: the compiler's field-by-field copy
    /// and event encoding of the ten fields cost ~1 kB of the entry point's code, which has ~800 B to spare.
    function _storeSolvency(SolvencyIndex calldata s, uint64 seq, uint64 ts) internal {
        bytes32 topic = SolvencyIndexPosted.selector;
        assembly ("memory-safe") {
            let slot := _solvency.slot
            let m := 0xffffffffffffffffffffffffffffffff
            // slots 0-3: (totalEquity, totalMaintenance), (totalInitial, shortfallNow),
            // (shortfallVar99, shortfallEs975), (fund, excludedEquity): low half the first field, high half the second
            for { let i := 0 } lt(i, 4) { i := add(i, 1) } {
                let f := add(s, shl(6, i))
                sstore(add(slot, i), or(and(calldataload(f), m), shl(128, calldataload(add(f, 0x20)))))
            }
            // slot 4: accounts | excludedAccounts << 32 | sequence << 64 | timestamp << 128
            sstore(
                add(slot, 4),
                or(
                    or(calldataload(add(s, 0x100)), shl(32, calldataload(add(s, 0x120)))),
                    or(shl(64, seq), shl(128, ts))
                )
            )
            // SolvencyIndexPosted(uint64 indexed sequence, uint64 timestamp, SolvencyIndex index)
            let ptr := mload(0x40)
            mstore(ptr, ts)
            calldatacopy(add(ptr, 0x20), s, 0x140)
            log2(ptr, 0x160, topic, seq)
        }
    }

    /// @dev Reverts unless `timestamp` is at most `MAX_FUTURE_SKEW` ahead of the chain and at most `maxAge` old.
    function _checkFresh(uint64 timestamp, uint256 maxAge) internal view {
        if (timestamp > block.timestamp + MAX_FUTURE_SKEW) revert AO_AttestationFromFuture(timestamp);
        if (uint256(timestamp) + maxAge < block.timestamp) revert AO_AttestationExpired(timestamp, maxAge);
    }

    /// @dev Verifies a leaf's branch against the ring and the root's freshness; returns the root.
    function _verifyMarginProof(MarginProof calldata p) internal view returns (bytes32 root) {
        root = MerkleProof.processProofCalldata(p.proof, BackstopTypes.leafHash(p.leaf));
        if (_rootRing[p.header.sequence % ROOT_RING_SIZE] != BackstopTypes.marginRootCommitment(root, p.header)) {
            revert AO_UnknownMarginRoot(p.header.sequence);
        }
        _checkFresh(p.header.timestamp, _config.maxAttestationAge);
    }

    /// @dev Records a verified leaf. Batch mode (`strict == false`) skips stale leaves with an event;
    /// single mode reverts.
    function _recordLeaf(MarginLeaf calldata l, MarginRootHeader calldata h, bytes32 root, bool strict) internal {
        AccountState memory a = _accounts[l.account];
        bool current = a.stateNonce == l.stateNonce && _outranksRecord(h.timestamp, h.sequence, a.attestedAt);
        _emitLeaf(l, h.sequence, current);
        if (!current) {
            if (!strict) return;
            if (a.stateNonce != l.stateNonce) revert AO_StaleMarginState(l.account, l.stateNonce, a.stateNonce);
            _requireOutranksRecord(h.timestamp, h.sequence, a.attestedAt);
        }
        a.equity = l.equity.toInt96();
        a.maintenance = l.maintenance.toUint96();
        a.attestedAt = uint32(h.timestamp);
        _accounts[l.account] = a;
        if (l.equity < int256(uint256(a.maintenance))) {
            _recordBreach(l, h, root);
            _bindToBreach(l.account);
        } else {
            _liftBreach(l.account, h.timestamp);
        }
    }

    /// @dev Whether a leaf of root (`ts`, `seq`) outranks an account record made at `attestedAt`: a later second; or
    /// the record's own second while exactly one root holds it (then it is the record's root), or from the newest
    /// root of all (no later root exists). Roots may share a second (consecutive blocks can); the record's root is
    /// then unknown, so an older root of that second is not ranked above it (review finding H-10). Seconds over
    /// MAX_SHARED_AGO before the newest root count as shared.
    function _outranksRecord(uint64 ts, uint64 seq, uint32 attestedAt) internal view returns (bool) {
        if (ts != attestedAt) return ts > attestedAt;
        Config storage c = _config;
        return ts + c.sharedSecondAgo > c.lastMarginTimestamp || seq == c.lastMarginSequence;
    }

    /// @dev Reverts, naming the rule, unless `_outranksRecord(ts, seq, attestedAt)`.
    function _requireOutranksRecord(uint64 ts, uint64 seq, uint32 attestedAt) internal view {
        if (!_outranksRecord(ts, seq, attestedAt)) revert AO_AttestationOlder(ts, attestedAt);
    }

    /// @dev Emits `MarginAttested` for leaf `l` of root `sequence` (`recorded`: stored as the account's record).
    function _emitLeaf(MarginLeaf calldata l, uint64 sequence, bool recorded) internal {
        emit MarginAttested(l.account, sequence, l.equity, l.maintenance, l.initial, l.modelValue, l.stateNonce, recorded);
    }

    /// @dev Called when a breach of `account` is recorded.
    function _bindToBreach(address account) internal virtual;

    /// @dev Called when a healthy record of `account`'s current portfolio, attested at `attestedAt`, is recorded.
    function _liftBreach(address account, uint64 attestedAt) internal virtual;

    function _recordBreach(MarginLeaf calldata l, MarginRootHeader calldata h, bytes32 root) internal {
        _breaches[l.account] = BreachRecord({
            equity: l.equity.toInt96(),
            maintenance: l.maintenance.toUint96(),
            stateNonce: l.stateNonce,
            timestamp: uint32(h.timestamp),
            initial: l.initial.toUint96(),
            modelValue: l.modelValue.toInt96(),
            breachedAt: uint64(block.timestamp)
        });
        emit AccountBreached(
            l.account, l.equity, l.maintenance, l.initial, l.modelValue, l.stateNonce, h.inputsHash, root, h.timestamp
        );
    }

    /// @dev Increments the account's stateNonce and marks its margin record stale (same slot: one SSTORE).
    function _bumpNonce(address account) internal {
        AccountState storage a = _accounts[account];
        a.stateNonce += 1;
        a.attestedAt = 0;
    }
}
