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

/// @notice The protocol solvency index the keepers sign with every margin root (`MarginRoot.solvencyHash` is its
/// EIP-712 struct hash): aggregate figures of the attested book, rounded once against the protocol (equity and the
/// fund down, margins and shortfalls up). Values in quote-asset base units.
/// @dev The shortfall of a scenario is the sum over attested accounts of max(-(equity after the move), 0); VaR 99 and
/// ES 97.5 are taken over the same Monte Carlo tail scenarios the accounts are margined on (docs/risk.md).
struct SolvencyIndex {
    int128 totalEquity; // [quote base units] sum of the attested accounts' equity
    uint128 totalMaintenance; // [quote base units] sum of their maintenance margins
    uint128 totalInitial; // [quote base units] sum of their initial margins
    uint128 shortfallNow; // [quote base units] sum of max(-equity, 0) today
    uint128 shortfallVar99; // [quote base units] VaR 99 of the protocol shortfall over the tail scenarios
    uint128 shortfallEs975; // [quote base units] ES 97.5 of the protocol shortfall over the tail scenarios
    uint128 fund; // [quote base units] the insurance fund balance the keepers saw
    int128 excludedEquity; // [quote base units] equity (where known) of the accounts left out
    uint32 accounts; // accounts the figures cover (the attested accounts)
    uint32 excludedAccounts; // accounts left out of the attestation (reasons in the archived inputs)
}

/// @notice The latest accepted solvency index and the margin root it came with: FIVE storage slots (the index's
/// eight values in four, counts, sequence and timestamp in the fifth). `sequence == 0`: none posted yet.
struct SolvencyRecord {
    int128 totalEquity; // [quote base units]
    uint128 totalMaintenance; // [quote base units]
    uint128 totalInitial; // [quote base units]
    uint128 shortfallNow; // [quote base units]
    uint128 shortfallVar99; // [quote base units]
    uint128 shortfallEs975; // [quote base units]
    uint128 fund; // [quote base units]
    int128 excludedEquity; // [quote base units]
    uint32 accounts; // accounts covered
    uint32 excludedAccounts; // accounts left out
    uint64 sequence; // the margin root's sequence
    uint64 timestamp; // [unix seconds] the margin root's observation time
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

    bytes32 internal constant MARGIN_ROOT_TYPEHASH = keccak256(
        "MarginRoot(bytes32 root,bytes32 inputsHash,uint64 sequence,uint64 timestamp,uint32 leafCount,"
        "bytes32 solvencyHash)"
    );
    bytes32 internal constant SOLVENCY_INDEX_TYPEHASH = keccak256(
        "SolvencyIndex(int128 totalEquity,uint128 totalMaintenance,uint128 totalInitial,uint128 shortfallNow,"
        "uint128 shortfallVar99,uint128 shortfallEs975,uint128 fund,int128 excludedEquity,uint32 accounts,"
        "uint32 excludedAccounts)"
    );
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

    /// @dev EIP-712 struct hash of the signed `MarginRoot` (the header's fields, the root and the index's hash).
    function marginRootStructHash(bytes32 root, MarginRootHeader calldata h, bytes32 solvencyHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(MARGIN_ROOT_TYPEHASH, root, h.inputsHash, h.sequence, h.timestamp, h.leafCount, solvencyHash)
        );
    }

    /// @dev What the root ring keeps for an accepted root and what a leaf's proof is checked against:
    /// keccak256(abi.encode(root, inputsHash, sequence, timestamp, leafCount)). It leaves the solvency index out (a
    /// proof carries only the header), and it is written only after the M-of-N check of the `MarginRoot` whose fields
    /// it commits to.
    function marginRootCommitment(bytes32 root, MarginRootHeader calldata h) internal pure returns (bytes32) {
        return keccak256(abi.encode(root, h.inputsHash, h.sequence, h.timestamp, h.leafCount));
    }

    /// @dev EIP-712 struct hash of a `SolvencyIndex`: every field is static, so encodeData is the struct's ten
    /// calldata words as they are. They are hashed unchecked (no ABI range check: less code on the posting path); a
    /// word that is not the clean encoding of its field cannot hash to what keepers signed.
    function solvencyStructHash(SolvencyIndex calldata s) internal pure returns (bytes32 h) {
        bytes32 typeHash = SOLVENCY_INDEX_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            calldatacopy(add(ptr, 0x20), s, 0x140)
            h := keccak256(ptr, 0x160)
        }
    }

    function quoteStructHash(Quote calldata q) internal pure returns (bytes32) {
        return keccak256(abi.encode(QUOTE_TYPEHASH, q.maker, q.seriesId, q.size, q.price, q.nonce, q.deadline));
    }
}
