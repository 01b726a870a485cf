// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice One account's margin state as attested by the keepers (a Merkle leaf).
/// @dev Values in quote-asset base units. `stateNonce` binds the leaf to the account's on-chain portfolio.
struct MarginLeaf {
    address account;
    uint32 stateNonce;
    int256 equity;
    uint256 maintenance;
    uint256 initial;
    int256 modelValue;
}

/// @notice The signed fields of a margin root other than the root itself.
struct MarginRootHeader {
    bytes32 inputsHash;
    uint64 sequence;
    uint64 timestamp;
    uint32 leafCount;
}

/// @notice A leaf with its Merkle branch against a root already posted (kept in the root ring).
/// @dev An "empty" proof has `leaf.account == address(0)`.
struct MarginProof {
    MarginRootHeader header;
    MarginLeaf leaf;
    bytes32[] proof;
}

/// @notice A maker's signed quote. `size` is the maker's signed size in WAD contracts (> 0: maker buys).
/// `price` is the premium per contract in WAD (quote units per contract).
struct Quote {
    address maker;
    uint256 seriesId;
    int256 size;
    uint256 price;
    uint256 nonce;
    uint64 deadline;
}

/// @notice A cash-settled option series on one underlying, settled in the deployment's quote asset.
struct Series {
    address underlying;
    uint64 expiry;
    bool isCall;
    uint128 strike;
}

/// @notice The per-account record: ONE storage slot.
/// @dev `stateNonce` is the account's current nonce; `equity`/`maintenance` the last recorded attestation, valid
/// for the current portfolio iff `attestedAt != 0` (cleared whenever `stateNonce` increments).
struct AccountState {
    int96 equity;
    uint96 maintenance;
    uint32 stateNonce;
    uint32 attestedAt;
}

/// @notice Breach record, stored only for breached accounts (`timestamp != 0`).
struct BreachRecord {
    int96 equity;
    uint96 maintenance;
    uint32 stateNonce;
    uint32 timestamp;
    uint96 initial;
    int96 modelValue;
    uint64 breachedAt;
}

/// @notice A breached or liquidated account's ledger (ONE slot, kept non-zero once primed so later writes are cheap).
/// @dev From the moment a breach is recorded (`inBreach`) until it is cleared, the account's stored book B is bound
/// to the breach: it cannot trade, withdraw or receive non-quote collateral, its stateNonce moves only through the
/// liquidation module, and quote cash credited to it (deposits, escrow releases) is kept outside B in
/// `creditedCash` (not sold, not counted by the effective views) until the breach is cleared and no claim is
/// pending. While `pendingWad != 0` B is also frozen for claims: holders own `pendingWad` of B not yet moved to
/// them, `movedWad` of B was already moved. Fractions are WAD fractions of B.
struct Lot {
    uint64 pendingWad; // [wad] of B claimed by bidders, not yet delivered
    uint64 movedWad; // [wad] of B already delivered
    uint96 creditedCash; // [quote base units] credited while bound or frozen, kept outside B
    bool primed; // the slot has been written once
    bool inBreach; // a breach record binds the book
    bool inAuction; // a running auction holds the breach (only the module clears it)
}

/// @notice A bidder's unsettled claim on a liquidated account's frozen book (ONE slot per holder; `source` is kept
/// after settlement so the slot stays non-zero). At most one source per holder at a time.
struct Claim {
    address source;
    uint64 fractionWad;
}

/// @notice Per-asset collateral configuration (one slot).
struct AssetConfig {
    bool listed;
    uint8 decimals;
    uint64 haircut;
    uint128 depositCap;
}

/// @title BackstopTypes
/// @notice EIP-712 type hashes and the margin leaf hash shared by the protocol core and the keepers.
library BackstopTypes {
    bytes32 internal constant MARGIN_ROOT_TYPEHASH =
        keccak256("MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount)");
    bytes32 internal constant PRICES_TYPEHASH =
        keccak256("Prices(address[] assets,uint256[] prices,uint64 sequence,uint64 timestamp)");
    bytes32 internal constant SETTLEMENT_PRICES_TYPEHASH =
        keccak256("SettlementPrices(address[] underlyings,uint256[] prices,uint64 expiry,uint64 timestamp)");
    bytes32 internal constant QUOTE_TYPEHASH =
        keccak256("Quote(address maker,uint256 seriesId,int256 size,uint256 price,uint256 nonce,uint64 deadline)");

    /// @dev OZ StandardMerkleTree leaf: keccak256(bytes.concat(keccak256(abi.encode(...)))).
    function leafHash(MarginLeaf calldata l) internal pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(abi.encode(l.account, l.stateNonce, l.equity, l.maintenance, l.initial, l.modelValue))
            )
        );
    }

    function marginRootStructHash(bytes32 root, MarginRootHeader calldata h) internal pure returns (bytes32) {
        return keccak256(abi.encode(MARGIN_ROOT_TYPEHASH, root, h.inputsHash, h.sequence, h.timestamp, h.leafCount));
    }

    function quoteStructHash(Quote calldata q) internal pure returns (bytes32) {
        return keccak256(abi.encode(QUOTE_TYPEHASH, q.maker, q.seriesId, q.size, q.price, q.nonce, q.deadline));
    }
}
