// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "./Test.sol";
import {FrostVerifier} from "../../contracts/FrostVerifier.sol";

/// @notice A single-party signer producing FROST(secp256k1, SHA-256) signatures for tests.
/// @dev A Schnorr signature in the FROST format by one key k is a valid FROST signature under the
///      group key PK = k·G: R = r·G, c = H2(ser(R) ‖ ser(PK) ‖ msg), z = r + c·k mod n. Points come
///      from forge's `createWallet` (secp256k1 public key of a private key).
library FrostSigner {
    uint256 internal constant N = FrostVerifier.N;

    struct Key {
        uint256 secret;
        uint256 x;
        uint8 parity;
    }

    struct Sig {
        uint256 rX;
        uint256 rY;
        uint256 z;
    }

    function key(Vm vm, uint256 secret) internal returns (Key memory k) {
        Vm.Wallet memory w = vm.createWallet(secret);
        k = Key(secret, w.publicKeyX, uint8(w.publicKeyY & 1));
    }

    function sign(Vm vm, Key memory k, bytes memory message) internal returns (Sig memory s) {
        uint256 r = uint256(keccak256(abi.encode("nonce", k.secret, message))) % N;
        if (r == 0) r = 1;
        Vm.Wallet memory w = vm.createWallet(r);
        uint256 c = FrostVerifier.challenge(k.x, k.parity, message, w.publicKeyX, w.publicKeyY);
        s = Sig(w.publicKeyX, w.publicKeyY, addmod(r, mulmod(c, k.secret, N), N));
    }

    function sign(Vm vm, Key memory k, bytes32 digest) internal returns (Sig memory) {
        return sign(vm, k, abi.encodePacked(digest));
    }
}
