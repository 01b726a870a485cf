// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Proxy} from "@openzeppelin/contracts/proxy/Proxy.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ClearinghouseBase} from "./ClearinghouseBase.sol";
import {ExpiringPause} from "./governance/ExpiringPause.sol";
import {
    AccountState,
    BackstopTypes,
    MarginLeaf,
    MarginProof,
    MarginRootHeader,
    Quote,
    SolvencyIndex
} from "./libraries/BackstopTypes.sol";

/// @title Clearinghouse
/// @notice Backstop protocol core: collateral vault, option book, keeper attestations and margin checks. This
/// contract holds all state and the hot paths (attestation posting, deposit, withdraw, trade); every other
/// function (governance, settlement, liquidation hook, views) lives in `ClearinghouseAdmin`, reached by
/// delegatecall from the fallback (same storage layout, fixed at construction; not upgradeable).
/// Liquidation bids record claims on a frozen book, delivered later by `settleClaim` (see `LiquidationClaims`).
/// Risk-adding trades and withdrawals need a fresh keeper attestation bound to the account's current stateNonce
/// showing enough headroom (equity - IM); deposits, reduce-only trades, nonce cancels and settlement never do,
/// and the pause never blocks them. From a recorded breach until it is cleared the account's book is bound to it
/// (no trade or withdrawal; quote deposits held apart), so nothing its owner does can stop its liquidation.
contract Clearinghouse is ClearinghouseBase, ExpiringPause, Proxy {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ immutables

    /// @notice The `ClearinghouseAdmin` code this contract delegates its cold functions to.
    address public immutable admin;

    // ------------------------------------------------------------------ constructor

    /// @param owner_ Initial owner (two-step transfers afterwards).
    /// @param quoteAsset_ The quote asset (decimals <= 18).
    /// @param quoteDepositCap Deposit cap of the quote asset.
    /// @param shortMarginFraction_ WAD fraction of spot x size a new short leg needs as headroom, [0.05e18, 1e18].
    /// @param admin_ A `ClearinghouseAdmin` deployed with the same quote asset.
    constructor(
        address owner_,
        address quoteAsset_,
        uint128 quoteDepositCap,
        uint64 shortMarginFraction_,
        address admin_
    ) ClearinghouseBase(owner_, quoteAsset_, quoteDepositCap, shortMarginFraction_) {
        if (admin_.code.length == 0 || ClearinghouseBase(admin_).quoteAsset() != quoteAsset_) {
            revert CH_AdminMismatch(admin_);
        }
        admin = admin_;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Post keeper-attested spot prices (WAD, quote units per whole asset unit).
    /// @param assets Assets priced (collateral and underlyings).
    /// @param prices WAD prices, > 0 and < 2^192.
    /// @param sequence Strictly increasing price sequence.
    /// @param timestamp Observation time; fresh and not older than the last price attestation.
    /// @param signatures >= threshold keeper signatures over `Prices(...)`, signers ascending.
    function postPrices(
        address[] calldata assets,
        uint256[] calldata prices,
        uint64 sequence,
        uint64 timestamp,
        bytes calldata signatures
    ) external {
        uint256 n = assets.length;
        if (n != prices.length) revert AO_LengthMismatch(n, prices.length);
        Config memory c = _config;
        _checkFresh(timestamp, c.maxAttestationAge);
        if (sequence <= c.lastPriceSequence) revert AO_AttestationReplayed(sequence, c.lastPriceSequence);
        if (timestamp < c.lastPriceTimestamp) revert AO_AttestationOlder(timestamp, c.lastPriceTimestamp);
        bytes32 structHash = keccak256(
            abi.encode(
                BackstopTypes.PRICES_TYPEHASH,
                keccak256(abi.encodePacked(assets)),
                keccak256(abi.encodePacked(prices)),
                sequence,
                timestamp
            )
        );
        _verifySignatures(_hashTypedDataV4(structHash), signatures, c.threshold);
        c.lastPriceSequence = uint256(sequence).toUint40();
        c.lastPriceTimestamp = uint256(timestamp).toUint32();
        _config = c;
        for (uint256 i; i < n; ++i) {
            uint256 p = prices[i];
            if (p == 0 || p > type(uint192).max) revert AO_InvalidPrice(assets[i], p);
            _spot[assets[i]] = PricePoint(uint192(p), timestamp);
        }
        emit PricesPosted(sequence, timestamp, assets, prices);
    }

    /// @notice Post a keeper-signed margin root without leaves; accounts are recorded later with proofs.
    /// @param root Merkle root (OZ StandardMerkleTree convention) of the batch's margin leaves.
    /// @param header inputsHash, strictly increasing sequence, fresh timestamp, leaf count.
    /// @param solvencyHash The signed `MarginRoot.solvencyHash`: EIP-712 struct hash of `solvency`.
    /// @param solvency The solvency index signed with the root (required; stored as the latest, `solvencyIndex()`).
    /// @param signatures >= threshold keeper signatures over `MarginRoot(...)`.
    function postMarginRoot(
        bytes32 root,
        MarginRootHeader calldata header,
        bytes32 solvencyHash,
        SolvencyIndex calldata solvency,
        bytes calldata signatures
    ) external {
        _acceptMarginRoot(root, header, solvencyHash, solvency, signatures);
    }

    /// @notice Post a keeper-signed margin batch: the root is rebuilt from `leaves` by multiproof, the signatures
    /// are checked on it, and every leaf whose stateNonce is current is recorded (breaches registered).
    /// @param header inputsHash, strictly increasing sequence, fresh timestamp, total leaf count of the tree.
    /// @param solvencyHash The signed `MarginRoot.solvencyHash`: EIP-712 struct hash of `solvency`.
    /// @param solvency The solvency index signed with the root (required; stored as the latest, `solvencyIndex()`).
    /// @param leaves The leaves posted (for a whole tree: ascending leaf-hash order).
    /// @param proof Multiproof nodes (empty for a whole tree).
    /// @param proofFlags Multiproof flags (`leafCount - 1` times `true` for a whole tree).
    /// @param signatures >= threshold keeper signatures over `MarginRoot(...)`.
    function postMarginBatch(
        MarginRootHeader calldata header,
        bytes32 solvencyHash,
        SolvencyIndex calldata solvency,
        MarginLeaf[] calldata leaves,
        bytes32[] calldata proof,
        bool[] calldata proofFlags,
        bytes calldata signatures
    ) external {
        bytes32 root = _batchRoot(leaves, proof, proofFlags);
        _acceptMarginRoot(root, header, solvencyHash, solvency, signatures);
        for (uint256 i; i < leaves.length; ++i) {
            _recordLeaf(leaves[i], header, root, false);
        }
    }

    /// @notice Record one account's leaf of a margin root still held in the ring (anyone may call), e.g. to
    /// register a breach after a root-only post. Reverts if the leaf is stale or does not outrank the account's
    /// record (older, or of the record's second while two roots share it: H-10).
    /// @param p The leaf, its branch and its root header.
    function recordMargin(MarginProof calldata p) external {
        bytes32 root = _verifyMarginProof(p);
        _recordLeaf(p.leaf, p.header, root, true);
    }

    /// @notice Deposit `amount` of listed `asset` for the caller. Never paused, never needs an attestation.
    /// @param asset A listed collateral asset.
    /// @param amount Token base units, > 0, within the deposit cap.
    function deposit(address asset, uint256 amount) external nonReentrant {
        _deposit(msg.sender, asset, amount);
    }

    /// @notice Withdraw `amount` of `asset`. An account with no open positions and non-negative cash passes an
    /// empty proof; otherwise `margin` must be a fresh leaf for the caller's current stateNonce with
    /// equity - initial >= amount x spot (quote units, rounded up, no haircut credit). Once keepers have been silent
    /// for `FALLBACK_DELAY`, an empty proof is accepted when the fallback margin after the withdrawal is >= 0.
    /// Refused while the account is bound to a breach (`CH_AccountInBreach`).
    /// @param asset A listed collateral asset.
    /// @param amount Token base units.
    /// @param margin The caller's margin leaf and branch, or an empty proof (leaf.account == 0).
    function withdraw(address asset, uint256 amount, MarginProof calldata margin) external nonReentrant {
        address account = msg.sender;
        if (amount == 0) revert CH_ZeroAmount();
        _requireNoClaims(account);
        if (!_assetConfig[asset].listed) revert CH_AssetNotListed(asset);
        bool fallbackExit;
        if (margin.leaf.account == address(0)) {
            if (_seriesOf[account].length != 0 || _cash[account] < 0) {
                if (!_fallbackActive()) revert CH_MarginProofRequired(account);
                fallbackExit = true;
            }
        } else {
            _requireNotPaused();
            uint256 value = asset == quoteAsset
                ? amount
                : _assetValue(amount, _freshSpot(asset), _assetConfig[asset].decimals, Math.Rounding.Ceil);
            _requireHeadroom(account, margin, value);
        }
        _debit(account, asset, amount);
        if (fallbackExit) _requireFallbackMargin(account); // measured on the book after the debit
        emit Withdrawn(account, asset, amount);
        IERC20(asset).safeTransfer(account, amount);
    }

    /// @notice Fill a maker's signed quote in full; the caller is the taker. The buyer pays the premium
    /// (|size| x price, rounded up) in quote cash. A leg that is not reduce-only needs a margin proof with
    /// equity - initial >= premium (buyer) or premium + shortMarginFraction x spot x |size| (seller).
    /// @param quote The maker's quote (`size` > 0: maker buys).
    /// @param makerSignature The maker's EIP-712 signature of `quote`.
    /// @param makerMargin The maker's margin proof, or empty if the maker's leg is reduce-only.
    /// @param takerMargin The taker's margin proof, or empty if the taker's leg is reduce-only.
    function trade(
        Quote calldata quote,
        bytes calldata makerSignature,
        MarginProof calldata makerMargin,
        MarginProof calldata takerMargin
    ) external nonReentrant {
        _requireNoClaims(quote.maker);
        _requireNoClaims(msg.sender);
        address underlying = _validateQuote(quote, makerSignature);
        uint256 premium =
            _wadToQuote(Math.mulDiv(_abs(quote.size), quote.price, WAD, Math.Rounding.Ceil), Math.Rounding.Ceil);
        bool makerFallback = _checkLeg(quote.maker, quote.seriesId, quote.size, premium, underlying, makerMargin);
        bool takerFallback = _checkLeg(msg.sender, quote.seriesId, -quote.size, premium, underlying, takerMargin);
        _applyTrade(quote, premium);
        if (makerFallback) _requireFallbackMargin(quote.maker);
        if (takerFallback) _requireFallbackMargin(msg.sender);
    }

    /// @notice Liquidation bid: `holder` acquires a claim on `shareWad` of what is left of `source`'s effective
    /// book (frozen until the claim is settled with `settleClaim`), and pays `payment` quote cash to the module.
    /// Only the liquidation module. Bumps both stateNonces.
    /// @param source The liquidated account.
    /// @param holder The bidder (must hold no claim on another book and not be frozen itself).
    /// @param shareWad WAD share of the source's remaining effective book, 0 < share <= 1e18.
    /// @param payment Quote base units moved from `holder` to the module (its cash may go negative here; the
    /// module checks the bidder's margin); negative: moved from the module to `holder`.
    /// @return sourceNonce The source's new stateNonce.
    function recordClaim(address source, address holder, uint256 shareWad, int256 payment)
        external
        onlyLiquidationModule
        returns (uint32 sourceNonce)
    {
        (sourceNonce,) = _recordClaim(source, holder, shareWad, payment);
    }

    // ------------------------------------------------------------------ external views

    /// @notice The account's current stateNonce (increments on every change of its positions or collateral).
    function stateNonce(address account) external view returns (uint32) {
        return _accounts[account].stateNonce;
    }

    /// @notice The account's record: last recorded equity and maintenance margin, current stateNonce, and the
    /// root timestamp of the record (0 if the portfolio changed since: the record is stale).
    function marginRecord(address account)
        external
        view
        returns (int256 equity, uint256 maintenance, uint32 stateNonce_, uint32 attestedAt)
    {
        AccountState memory a = _accounts[account];
        return (a.equity, a.maintenance, a.stateNonce, a.attestedAt);
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev The root `leaves` and the multiproof (`proof`, `proofFlags`) lead to.
    function _batchRoot(MarginLeaf[] calldata leaves, bytes32[] calldata proof, bool[] calldata proofFlags)
        internal
        pure
        returns (bytes32)
    {
        uint256 n = leaves.length;
        bytes32[] memory hashes = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            hashes[i] = BackstopTypes.leafHash(leaves[i]);
        }
        return MerkleProof.processMultiProofCalldata(proof, proofFlags, hashes);
    }

    function _implementation() internal view override returns (address) {
        return admin;
    }
}
