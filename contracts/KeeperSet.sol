// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IBackstopErrors, IBackstopEvents} from "./interfaces/IBackstopEvents.sol";

/// @title KeeperSet
/// @notice Owner-governed set of N keepers with threshold M, and verification of M-of-N EIP-712 signatures.
/// @dev Signatures are passed as one `bytes` blob of 65-byte `r ‖ s ‖ v` items, signers strictly ascending.
/// The oracle configuration (threshold, ages, last sequences) shares one storage slot: attestations read it once
/// and write it once.
abstract contract KeeperSet is Ownable2Step, EIP712, IBackstopErrors, IBackstopEvents {
    uint256 public constant MAX_KEEPERS = 16;
    uint256 public constant MAX_FUTURE_SKEW = 15;
    uint256 public constant MIN_ATTESTATION_AGE = 5;
    uint256 public constant MAX_ATTESTATION_AGE = 3600;
    uint256 internal constant SIGNATURE_LENGTH = 65;

    /// @dev One slot: 8 + 16 + 16 + 40 + 32 + 40 + 32 + 64 = 248 bits.
    struct Config {
        uint8 threshold;
        uint16 maxAttestationAge;
        uint16 maxPriceAge;
        uint40 lastPriceSequence;
        uint32 lastPriceTimestamp;
        uint40 lastMarginSequence;
        uint32 lastMarginTimestamp;
        uint64 shortMarginFraction;
    }

    Config internal _config;
    address[] internal _keepers;
    mapping(address => bool) internal _isKeeper;

    constructor(address initialOwner) Ownable(initialOwner) EIP712("Backstop", "1") {
        _config.maxAttestationAge = 120;
        _config.maxPriceAge = 300;
    }

    // ------------------------------------------------------------------ internals

    function _checkBounds(bytes32 name, uint256 value, uint256 min, uint256 max) internal pure {
        if (value < min || value > max) revert ParameterOutOfBounds(name, value, min, max);
    }

    function _checkFresh(uint64 timestamp, uint256 maxAge) internal view {
        if (timestamp > block.timestamp + MAX_FUTURE_SKEW) revert AttestationFromFuture(timestamp);
        if (uint256(timestamp) + maxAge < block.timestamp) revert AttestationExpired(timestamp, maxAge);
    }

    /// @dev Reverts unless `signatures` holds >= `threshold_` valid low-s signatures of `digest` by distinct
    /// registered keepers in strictly ascending signer order.
    function _verifySignatures(bytes32 digest, bytes calldata signatures, uint256 threshold_) internal view {
        uint256 len = signatures.length;
        if (len % SIGNATURE_LENGTH != 0) revert MalformedSignatures(len);
        uint256 count = len / SIGNATURE_LENGTH;
        if (count < threshold_ || count == 0) revert TooFewSignatures(count, threshold_);
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
            if (err == ECDSA.RecoverError.InvalidSignatureS) revert HighSSignature(i);
            if (err != ECDSA.RecoverError.NoError) revert InvalidSignature(i);
            if (signer <= previous) revert SignersNotAscending(i, signer, previous);
            if (!_isKeeper[signer]) revert NotAKeeper(signer);
            previous = signer;
        }
    }
}
