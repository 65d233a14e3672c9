// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title FrostVerifier
/// @notice Verifies RFC 9591 FROST(secp256k1, SHA-256) Schnorr signatures with the ecrecover trick.
/// @dev A signature is (R, z) over message `msg` under group key PK. It is valid iff
///      z·G = R + c·PK with c = H2(ser(R) ‖ ser(PK) ‖ msg), ser = 33-byte SEC1 compressed, and
///      H2 = hash_to_field over expand_message_xmd(SHA-256), DST "FROST-secp256k1-SHA256-v1chal",
///      48 output bytes reduced mod n (RFC 9591 §6.5, RFC 9380 §5.3.1). The message is the raw
///      message, not hashed again.
///
///      ecrecover(h, v, r, s) returns address(r⁻¹(s·P − h·G)), P the point with x = r, parity v − 27.
///      With r = PK.x, v = 27 + parity(PK.y), s = −c·PK.x, h = −z·PK.x (mod n) it returns
///      address(z·G − c·PK), which must equal address(R) = keccak256(R.x ‖ R.y)[12:].
///
///      Security: every check below is required, none is an optimisation.
///      - 0 < PK.x < n (ecrecover needs r < n), PK.x on the curve (else ecrecover fails → false);
///      - parity ∈ {0,1} (used as v and as the 0x02/0x03 prefix of ser(PK));
///      - z < n; R.x, R.y < p; R on the curve (without it a free R.y gives a ~2^80 birthday forgery
///        on the 160-bit address);
///      - c ≠ 0 (else s = 0); ecrecover returning address(0) is a failure.
///      Every function returns false on invalid input and never reverts (except out of gas).
library FrostVerifier {
    /// @dev Order of the secp256k1 group.
    uint256 internal constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    /// @dev Field prime of secp256k1.
    uint256 internal constant P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F;

    /// @dev I2OSP(48, 2) ‖ I2OSP(0, 1) ‖ "FROST-secp256k1-SHA256-v1chal" (the last byte of DST',
    ///      0x1d = len(DST), follows separately).
    uint256 private constant B0_TAIL = 0x00300046524f53542d736563703235366b312d5348413235362d76316368616c;
    /// @dev 0x01 ‖ DST ‖ 0x1d ‖ (one ignored byte): the 31 bytes after b0 in b1's input.
    uint256 private constant B1_TAIL = 0x0146524f53542d736563703235366b312d5348413235362d76316368616c1d00;
    /// @dev 0x02 ‖ DST ‖ 0x1d ‖ (one ignored byte): the 31 bytes after (b0 xor b1) in b2's input.
    uint256 private constant B2_TAIL = 0x0246524f53542d736563703235366b312d5348413235362d76316368616c1d00;
    /// @dev (p + 1) / 4, the exponent of a square root mod p.
    uint256 private constant SQRT_EXP = 0x3fffffffffffffffffffffffffffffffffffffffffffffffffffffffbfffff0c;

    /// @notice Verifies a FROST signature over a 32-byte message (the EIP-712 digest fast path).
    /// @param pkX x-coordinate of the group public key.
    /// @param pkParity parity of the group key's y-coordinate (0 even, 1 odd).
    /// @param message the 32-byte message (signed as is, 32 raw bytes).
    /// @param rX x-coordinate of the commitment R (uncompressed: decompress off-chain).
    /// @param rY y-coordinate of R.
    /// @param z the signature scalar.
    /// @return ok true iff the signature is valid.
    function verify(uint256 pkX, uint8 pkParity, bytes32 message, uint256 rX, uint256 rY, uint256 z)
        internal
        view
        returns (bool ok)
    {
        assembly ("memory-safe") {
            // Small types may carry dirty upper bits inside assembly: clean the parity first.
            pkParity := and(pkParity, 0xff)
            // 0 < pkX < n ⇔ pkX − 1 < n − 1 (wrapping); parity < 2; z < n; rX, rY < p; R on curve.
            let valid :=
                and(
                    and(lt(sub(pkX, 1), sub(N, 1)), lt(pkParity, 2)),
                    and(and(lt(z, N), lt(rX, P)), lt(rY, P))
                )
            valid :=
                and(valid, eq(mulmod(rY, rY, P), addmod(mulmod(rX, mulmod(rX, rX, P), P), 7, P)))
            if valid {
                let m := mload(0x40)
                // b0 input: Z_pad(64) ‖ ser(R) ‖ ser(PK) ‖ msg ‖ I2OSP(48,2) ‖ 0x00 ‖ DST'  (195 bytes)
                mstore(m, 0)
                mstore(add(m, 0x20), 0)
                mstore(add(m, 65), rX)
                mstore8(add(m, 64), add(2, and(rY, 1)))
                mstore(add(m, 98), pkX)
                mstore8(add(m, 97), add(2, pkParity))
                mstore(add(m, 130), message)
                mstore(add(m, 162), B0_TAIL)
                mstore8(add(m, 194), 0x1d)
                valid := staticcall(gas(), 2, m, 195, 0, 0x20)
                let b0 := mload(0)
                // b1 = H(b0 ‖ 0x01 ‖ DST')
                mstore(m, b0)
                mstore(add(m, 0x20), B1_TAIL)
                valid := and(valid, staticcall(gas(), 2, m, 63, 0, 0x20))
                let b1 := mload(0)
                // b2 = H((b0 xor b1) ‖ 0x02 ‖ DST')
                mstore(m, xor(b0, b1))
                mstore(add(m, 0x20), B2_TAIL)
                valid := and(valid, staticcall(gas(), 2, m, 63, 0, 0x20))
                // c = (b1 · 2^128 + b2[0..16]) mod n
                let c := addmod(mulmod(b1, shl(128, 1), N), shr(128, mload(0)), N)
                if and(valid, iszero(iszero(c))) {
                    // ecrecover(h = −z·pkX, v = 27 + parity, r = pkX, s = −c·pkX)
                    mstore(m, mulmod(sub(N, z), pkX, N))
                    mstore(add(m, 0x20), add(27, pkParity))
                    mstore(add(m, 0x40), pkX)
                    mstore(add(m, 0x60), mulmod(sub(N, c), pkX, N))
                    mstore(0, 0)
                    let success := staticcall(gas(), 1, m, 0x80, 0, 0x20)
                    let a := mload(0)
                    mstore(0, rX)
                    mstore(0x20, rY)
                    let rAddr := and(keccak256(0, 0x40), 0xffffffffffffffffffffffffffffffffffffffff)
                    ok := and(and(success, iszero(iszero(a))), eq(a, rAddr))
                }
            }
        }
    }

    /// @notice Verifies a FROST signature over an arbitrary message.
    /// @dev Same rules as the bytes32 overload; the message is hashed as raw bytes (any length).
    function verify(uint256 pkX, uint8 pkParity, bytes memory message, uint256 rX, uint256 rY, uint256 z)
        internal
        view
        returns (bool ok)
    {
        if (!(pkX != 0 && pkX < N && pkParity < 2 && z < N && rX < P && rY < P)) return false;
        if (!isOnCurve(rX, rY)) return false;
        uint256 c = challenge(pkX, pkParity, message, rX, rY);
        if (c == 0) return false;
        assembly ("memory-safe") {
            pkParity := and(pkParity, 0xff)
            let m := mload(0x40)
            mstore(m, mulmod(sub(N, z), pkX, N))
            mstore(add(m, 0x20), add(27, pkParity))
            mstore(add(m, 0x40), pkX)
            mstore(add(m, 0x60), mulmod(sub(N, c), pkX, N))
            mstore(0, 0)
            let success := staticcall(gas(), 1, m, 0x80, 0, 0x20)
            let a := mload(0)
            mstore(0, rX)
            mstore(0x20, rY)
            let rAddr := and(keccak256(0, 0x40), 0xffffffffffffffffffffffffffffffffffffffff)
            ok := and(and(success, iszero(iszero(a))), eq(a, rAddr))
        }
    }

    /// @notice The FROST challenge c = H2(ser(R) ‖ ser(PK) ‖ message) mod n (RFC 9591).
    /// @dev Inputs are not validated here: callers check ranges first. Uses SHA-256 (precompile 2)
    ///      through expand_message_xmd with 48 output bytes.
    function challenge(uint256 pkX, uint8 pkParity, bytes memory message, uint256 rX, uint256 rY)
        internal
        view
        returns (uint256 c)
    {
        assembly ("memory-safe") {
            pkParity := and(pkParity, 0xff)
            let len := mload(message)
            let m := mload(0x40)
            mstore(m, 0)
            mstore(add(m, 0x20), 0)
            mstore(add(m, 65), rX)
            mstore8(add(m, 64), add(2, and(rY, 1)))
            mstore(add(m, 98), pkX)
            mstore8(add(m, 97), add(2, and(pkParity, 1)))
            mcopy(add(m, 130), add(message, 0x20), len)
            let t := add(add(m, 130), len)
            mstore(t, B0_TAIL)
            mstore8(add(t, 32), 0x1d)
            let ok := staticcall(gas(), 2, m, add(163, len), 0, 0x20)
            let b0 := mload(0)
            mstore(m, b0)
            mstore(add(m, 0x20), B1_TAIL)
            ok := and(ok, staticcall(gas(), 2, m, 63, 0, 0x20))
            let b1 := mload(0)
            mstore(m, xor(b0, b1))
            mstore(add(m, 0x20), B2_TAIL)
            ok := and(ok, staticcall(gas(), 2, m, 63, 0, 0x20))
            c := addmod(mulmod(b1, shl(128, 1), N), shr(128, mload(0)), N)
            if iszero(ok) { c := 0 }
        }
    }

    /// @notice Whether (x, y) is a point of secp256k1 (coordinates must be < p).
    function isOnCurve(uint256 x, uint256 y) internal pure returns (bool) {
        if (x >= P || y >= P) return false;
        return mulmod(y, y, P) == addmod(mulmod(x, mulmod(x, x, P), P), 7, P);
    }

    /// @notice Whether (x, parity) is a usable group key: 0 < x < n, parity ∈ {0,1} and x is the
    ///         x-coordinate of a curve point (x³ + 7 is a square mod p).
    function isValidKey(uint256 x, uint8 parity) internal view returns (bool ok) {
        if (x == 0 || x >= N || parity > 1) return false;
        uint256 y2 = addmod(mulmod(x, mulmod(x, x, P), P), 7, P);
        assembly ("memory-safe") {
            // modexp(y2, (p+1)/4, p) via precompile 5
            let m := mload(0x40)
            mstore(m, 0x20)
            mstore(add(m, 0x20), 0x20)
            mstore(add(m, 0x40), 0x20)
            mstore(add(m, 0x60), y2)
            mstore(add(m, 0x80), SQRT_EXP)
            mstore(add(m, 0xa0), P)
            if staticcall(gas(), 5, m, 0xc0, 0, 0x20) {
                let y := mload(0)
                ok := eq(mulmod(y, y, P), y2)
            }
        }
    }
}

/// @title FrostVerifierHarness
/// @notice Deployable wrapper around {FrostVerifier} for tests and off-chain checks.
contract FrostVerifierHarness {
    /// @notice True iff (rX, rY, z) is a valid FROST signature of `message` under (pkX, pkParity).
    ///         Returns false on any invalid input; never reverts.
    function verify(uint256 pkX, uint8 pkParity, bytes calldata message, uint256 rX, uint256 rY, uint256 z)
        external
        view
        returns (bool)
    {
        if (message.length == 32) {
            return FrostVerifier.verify(pkX, pkParity, bytes32(message), rX, rY, z);
        }
        return FrostVerifier.verify(pkX, pkParity, message, rX, rY, z);
    }

    /// @notice The 32-byte-message fast path, exposed for gas measurement and parity tests.
    function verifyDigest(uint256 pkX, uint8 pkParity, bytes32 digest, uint256 rX, uint256 rY, uint256 z)
        external
        view
        returns (bool)
    {
        return FrostVerifier.verify(pkX, pkParity, digest, rX, rY, z);
    }

    /// @notice The fast path with the gas of the library call alone (gasleft() around it, so no
    ///         transaction, calldata or dispatch overhead): what an integrating contract pays.
    function verifyGasUsed(uint256 pkX, uint8 pkParity, bytes32 digest, uint256 rX, uint256 rY, uint256 z)
        external
        view
        returns (bool ok, uint256 gasUsed)
    {
        uint256 g = gasleft();
        ok = FrostVerifier.verify(pkX, pkParity, digest, rX, rY, z);
        gasUsed = g - gasleft();
    }

    /// @notice The FROST challenge c for (R, PK, message); inputs are not validated.
    function challenge(uint256 pkX, uint8 pkParity, bytes calldata message, uint256 rX, uint256 rY)
        external
        view
        returns (uint256)
    {
        return FrostVerifier.challenge(pkX, pkParity, message, rX, rY);
    }

    /// @notice Whether (x, parity) is an acceptable group key.
    function isValidKey(uint256 x, uint8 parity) external view returns (bool) {
        return FrostVerifier.isValidKey(x, parity);
    }
}
