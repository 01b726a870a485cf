// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IKeeperSet} from "./interfaces/IKeeperSet.sol";

/// @title KeeperSet
/// @notice Owner-governed set of N keepers with threshold M, and verification of M-of-N EIP-712 signatures.
/// @dev Signatures are passed as one `bytes` blob of 65-byte `r ‖ s ‖ v` items, signers strictly ascending.
/// The oracle configuration (threshold, ages, last sequences) shares one storage slot: attestations read it once
/// and write it once.
abstract contract KeeperSet is Ownable2Step, EIP712, IKeeperSet {
    // ------------------------------------------------------------------ types

    /// @dev One slot: 8 + 16 + 16 + 40 + 32 + 40 + 32 + 64 + 8 = 256 bits.
    struct Config {
        uint8 threshold; // keeper signatures an attestation needs
        uint16 maxAttestationAge; // [seconds] oldest a signed attestation may be when submitted or used
        uint16 maxPriceAge; // [seconds] oldest a stored spot price may be when a margin decision uses it
        uint40 lastPriceSequence; // last accepted price sequence
        uint32 lastPriceTimestamp; // [unix seconds] its observation time
        uint40 lastMarginSequence; // last accepted margin root sequence
        uint32 lastMarginTimestamp; // [unix seconds] its observation time
        uint64 shortMarginFraction; // [wad] of spot x size a new short leg needs as headroom
        // [seconds] how long before lastMarginTimestamp the latest second holding two or more margin roots was,
        // saturating at MAX_SHARED_AGO (review finding H-10)
        uint8 sharedSecondAgo;
    }

    // ------------------------------------------------------------------ constants

    uint256 public constant MAX_KEEPERS = 16;
    uint256 public constant MIN_ATTESTATION_AGE = 5;
    uint256 public constant MAX_ATTESTATION_AGE = 3600;
    uint256 internal constant SIGNATURE_LENGTH = 65;
    /// @dev Saturation of `Config.sharedSecondAgo` [seconds]: a record older than this before the newest root is
    /// never ranked against a leaf of its own second (a later root's leaf is needed).
    uint256 internal constant MAX_SHARED_AGO = 255;

    // ------------------------------------------------------------------ storage

    Config internal _config;
    address[] internal _keepers;
    mapping(address => bool) internal _isKeeper;

    // ------------------------------------------------------------------ constructor

    constructor(address initialOwner) Ownable(initialOwner) EIP712("Backstop", "1") {
        _config.maxAttestationAge = 120;
        _config.maxPriceAge = 300;
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev Reverts unless `signatures` holds >= `threshold_` valid low-s signatures of `digest` by distinct
    /// registered keepers in strictly ascending signer order.
    function _verifySignatures(bytes32 digest, bytes calldata signatures, uint256 threshold_) internal view {
        uint256 len = signatures.length;
        if (len % SIGNATURE_LENGTH != 0) revert KS_MalformedSignatures(len);
        uint256 count = len / SIGNATURE_LENGTH;
        if (count < threshold_ || count == 0) revert KS_TooFewSignatures(count, threshold_);
        address previous;
        for (uint256 i; i < count; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly ("memory-safe") {
                let p := add(signatures.offset, mul(i, 65))
                r := calldataload(p)
                s := calldataload(add(p, 32))
                v := byte(0, calldataload(add(p, 64)))
            }
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, s);
            if (err == ECDSA.RecoverError.InvalidSignatureS) revert KS_HighSSignature(i);
            if (err != ECDSA.RecoverError.NoError) revert KS_InvalidSignature(i);
            if (signer <= previous) revert KS_SignersNotAscending(i, signer, previous);
            if (!_isKeeper[signer]) revert KS_NotAKeeper(signer);
            previous = signer;
        }
    }
}
