// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice One account's margin state as attested by the keepers (a Merkle leaf).
/// @dev Values in quote-asset base units. `stateNonce` binds the leaf to the account's on-chain portfolio.
struct MarginLeaf {
    address account; // the attested account
    uint32 stateNonce; // the account's stateNonce the keepers attested
    int256 equity; // [quote base units] haircut collateral value + cash + model value of the positions
    uint256 maintenance; // [quote base units] maintenance margin MM
    uint256 initial; // [quote base units] initial margin IM
    int256 modelValue; // [quote base units] model value of the option positions (the auction's start price)
}

/// @notice The signed fields of a margin root other than the root itself.
struct MarginRootHeader {
    bytes32 inputsHash; // keccak256 of the keepers' canonical inputs (spot, vol surface, parameters)
    uint64 sequence; // strictly increasing margin root sequence
    uint64 timestamp; // [unix seconds] observation time
    uint32 leafCount; // leaves in the tree (informational)
}

/// @notice A leaf with its Merkle branch against a root already posted (kept in the root ring).
/// @dev An "empty" proof has `leaf.account == address(0)`.
struct MarginProof {
    MarginRootHeader header; // the root's signed fields (the root itself is rebuilt from leaf and proof)
    MarginLeaf leaf; // the account's leaf
    bytes32[] proof; // Merkle branch of the leaf
}

/// @notice A maker's signed quote. `size` is the maker's signed size in WAD contracts (> 0: maker buys).
/// `price` is the premium per contract in WAD (quote units per contract).
struct Quote {
    address maker; // the signer
    uint256 seriesId; // the option series
    int256 size; // [wad contracts] the maker's signed size (> 0: the maker buys)
    uint256 price; // [wad quote units per contract] premium per contract
    uint256 nonce; // the maker's quote nonce (each fills once)
    uint64 deadline; // [unix seconds] last second the quote may fill
}

/// @notice A cash-settled option series on one underlying, settled in the deployment's quote asset.
struct Series {
    address underlying; // the asset whose attested price settles the series
    uint64 expiry; // [unix seconds]
    bool isCall; // call or put
    uint128 strike; // [wad quote units per whole underlying unit]
}

/// @notice The per-account record: ONE storage slot.
/// @dev `stateNonce` is the account's current nonce; `equity`/`maintenance` the last recorded attestation, valid
/// for the current portfolio iff `attestedAt != 0` (cleared whenever `stateNonce` increments).
struct AccountState {
    int96 equity; // [quote base units] last recorded attested equity
    uint96 maintenance; // [quote base units] last recorded maintenance margin
    uint32 stateNonce; // the account's current stateNonce
    uint32 attestedAt; // [unix seconds] root timestamp of the record; 0 once the stateNonce moved on
}

/// @notice Breach record, stored only for breached accounts (`timestamp != 0`).
struct BreachRecord {
    int96 equity; // [quote base units] attested equity E
    uint96 maintenance; // [quote base units] attested maintenance margin MM
    uint32 stateNonce; // the stateNonce the breach was attested for
    uint32 timestamp; // [unix seconds] root timestamp of the attestation; 0: no breach
    uint96 initial; // [quote base units] attested initial margin IM
    int96 modelValue; // [quote base units] attested model value of the positions
    uint64 breachedAt; // [unix seconds] block time the breach was recorded
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
    address source; // the liquidated account (kept after settlement: the slot stays non-zero)
    uint64 fractionWad; // [wad] of the source's frozen book B claimed; 0: no claim
}

/// @notice Per-asset collateral configuration (one slot).
struct AssetConfig {
    bool listed; // listed as collateral
    uint8 decimals; // the token's decimals (<= 18)
    uint64 haircut; // [wad] fraction of the value not counted (0 for the quote asset, <= 0.9e18)
    uint128 depositCap; // [token base units] cap on total deposits
}

/// @title BackstopTypes
/// @notice EIP-712 type hashes and the margin leaf hash shared by the protocol core and the keepers.
library BackstopTypes {
    // ------------------------------------------------------------------ constants

    bytes32 internal constant MARGIN_ROOT_TYPEHASH =
        keccak256("MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount)");
    bytes32 internal constant PRICES_TYPEHASH =
        keccak256("Prices(address[] assets,uint256[] prices,uint64 sequence,uint64 timestamp)");
    bytes32 internal constant SETTLEMENT_PRICES_TYPEHASH =
        keccak256("SettlementPrices(address[] underlyings,uint256[] prices,uint64 expiry,uint64 timestamp)");
    bytes32 internal constant QUOTE_TYPEHASH =
        keccak256("Quote(address maker,uint256 seriesId,int256 size,uint256 price,uint256 nonce,uint64 deadline)");

    // ------------------------------------------------------------------ internal functions

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
