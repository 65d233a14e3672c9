// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm, console} from "./lib/Test.sol";
import {FrostSigner} from "./lib/FrostSigner.sol";
import {FrostVerifier, FrostVerifierHarness} from "../contracts/FrostVerifier.sol";

/// @notice RFC 9591 vectors (frost-secp256k1 3.0.0, 3-of-5) and every rejection rule of the verifier.
contract FrostVerifierTest is Test {
    uint256 constant N = FrostVerifier.N;
    uint256 constant P = FrostVerifier.P;
    /// @dev Relative to the forge project root (chain/): the repository's sibling `shared/`.
    string constant VECTORS = "/../../shared/vectors/frost-secp256k1-sha256.jsonl";

    struct Vector {
        bytes msg;
        uint256 pkX;
        uint8 parity;
        uint256 rX;
        uint256 rY;
        uint256 z;
        uint256 c;
    }

    FrostVerifierHarness h;

    function setUp() public {
        h = new FrostVerifierHarness();
    }

    function _vectors() internal view returns (Vector[] memory out) {
        string memory path = string.concat(vm.projectRoot(), VECTORS);
        string memory text;
        try vm.readFile(path) returns (string memory t) {
            text = t;
        } catch {
            revert(string.concat("FROST vectors missing: expected ", path, " (a shared/ folder beside the repo)"));
        }
        string[] memory lines = vm.split(text, "\n");
        uint256 count;
        for (uint256 i; i < lines.length; ++i) {
            if (bytes(lines[i]).length > 2) ++count;
        }
        out = new Vector[](count);
        uint256 j;
        for (uint256 i; i < lines.length; ++i) {
            string memory l = lines[i];
            if (bytes(l).length <= 2) continue;
            out[j++] = Vector({
                msg: vm.parseJsonBytes(l, ".msg"),
                pkX: uint256(vm.parseJsonBytes32(l, ".pkX")),
                parity: uint8(vm.parseJsonUint(l, ".pkParity")),
                rX: uint256(vm.parseJsonBytes32(l, ".rX")),
                rY: uint256(vm.parseJsonBytes32(l, ".rY")),
                z: uint256(vm.parseJsonBytes32(l, ".z")),
                c: uint256(vm.parseJsonBytes32(l, ".c"))
            });
        }
        assertTrue(count > 0, "no vectors in file");
    }

    function _verify(Vector memory v) internal view returns (bool) {
        return h.verify(v.pkX, v.parity, v.msg, v.rX, v.rY, v.z);
    }

    function test_vectors_challengeMatches() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            assertEq(h.challenge(v.pkX, v.parity, v.msg, v.rX, v.rY), v.c, "challenge");
        }
    }

    function test_vectors_verify() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            assertTrue(_verify(v), "vector must verify (bytes path)");
            if (v.msg.length == 32) {
                assertTrue(h.verifyDigest(v.pkX, v.parity, bytes32(v.msg), v.rX, v.rY, v.z), "bytes32 path");
            }
            // the generic path, bypassing the harness' dispatch
            assertTrue(FrostVerifier.verify(v.pkX, v.parity, v.msg, v.rX, v.rY, v.z), "generic path");
        }
    }

    function test_vectors_rejectTamperedMessage() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            uint256 len = v.msg.length;
            if (len > 0) {
                v.msg[len - 1] ^= 0x01;
                assertFalse(_verify(v), "flipped message bit");
                v.msg[len - 1] ^= 0x01;
                assertFalse(h.verify(v.pkX, v.parity, "", v.rX, v.rY, v.z), "empty message");
            }
            bytes memory longer = bytes.concat(v.msg, hex"00");
            assertFalse(h.verify(v.pkX, v.parity, longer, v.rX, v.rY, v.z), "appended byte");
            if (len == 32) {
                assertFalse(h.verifyDigest(v.pkX, v.parity, bytes32(v.msg) ^ bytes32(uint256(1)), v.rX, v.rY, v.z), "digest");
            }
        }
    }

    function test_vectors_rejectTamperedZ() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            uint256 z = v.z;
            v.z = addmod(z, 1, N);
            assertFalse(_verify(v), "z + 1");
            v.z = 0;
            assertFalse(_verify(v), "z = 0");
            v.z = N;
            assertFalse(_verify(v), "z = n");
            v.z = type(uint256).max;
            assertFalse(_verify(v), "z = 2^256 - 1");
            if (z <= type(uint256).max - N) {
                v.z = z + N; // same scalar mod n: must still be rejected (z >= n)
                assertFalse(_verify(v), "z + n");
            }
        }
    }

    function test_vectors_rejectTamperedKey() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            uint256 x = v.pkX;
            v.pkX = x + 1;
            assertFalse(_verify(v), "pkX + 1");
            v.pkX = x ^ (1 << 100);
            assertFalse(_verify(v), "pkX bit flip");
            v.pkX = 0;
            assertFalse(_verify(v), "pkX = 0");
            v.pkX = N;
            assertFalse(_verify(v), "pkX = n");
            v.pkX = N + 1;
            assertFalse(_verify(v), "pkX = n + 1");
            v.pkX = type(uint256).max;
            assertFalse(_verify(v), "pkX = 2^256 - 1");
            v.pkX = x;
            v.parity ^= 1;
            assertFalse(_verify(v), "parity flipped");
            v.parity = 2;
            assertFalse(_verify(v), "parity = 2");
            v.parity = 255;
            assertFalse(_verify(v), "parity = 255");
        }
    }

    function test_vectors_rejectBadR() public view {
        Vector[] memory vs = _vectors();
        for (uint256 i; i < vs.length; ++i) {
            Vector memory v = vs[i];
            uint256 rX = v.rX;
            uint256 rY = v.rY;
            v.rY = addmod(rY, 1, P);
            assertFalse(_verify(v), "R off the curve (y + 1)");
            if (rY <= type(uint256).max - P) {
                v.rY = rY + P; // same residue, out of range
                assertFalse(_verify(v), "R.y >= p");
            }
            v.rY = P - rY; // -R: on the curve, wrong point
            assertFalse(_verify(v), "R negated");
            v.rY = rY;
            v.rX = addmod(rX, 1, P);
            assertFalse(_verify(v), "R.x + 1");
            v.rX = rX <= type(uint256).max - P ? rX + P : P;
            assertFalse(_verify(v), "R.x >= p");
            v.rX = 0;
            v.rY = 0;
            assertFalse(_verify(v), "R = (0, 0)");
        }
    }

    /// @dev A signature from the in-test signer verifies, and with arbitrary message lengths.
    function test_testSigner_roundTrip() public {
        FrostSigner.Key memory k = FrostSigner.key(vm, 0xC0FFEE);
        bytes memory m = "an arbitrary, longer-than-32-bytes message for the generic path";
        FrostSigner.Sig memory s = FrostSigner.sign(vm, k, m);
        assertTrue(h.verify(k.x, k.parity, m, s.rX, s.rY, s.z), "long message");
        assertFalse(h.verify(k.x, k.parity, bytes.concat(m, "!"), s.rX, s.rY, s.z), "long message changed");
        s = FrostSigner.sign(vm, k, bytes(""));
        assertTrue(h.verify(k.x, k.parity, "", s.rX, s.rY, s.z), "empty message");
        bytes32 d = keccak256("digest");
        s = FrostSigner.sign(vm, k, d);
        assertTrue(h.verifyDigest(k.x, k.parity, d, s.rX, s.rY, s.z), "digest");
        assertTrue(h.verify(k.x, k.parity, abi.encodePacked(d), s.rX, s.rY, s.z), "digest as bytes");
    }

    function testFuzz_signerVerifies(uint256 secret, bytes32 digest) public {
        secret = secret % (N - 1) + 1;
        FrostSigner.Key memory k = FrostSigner.key(vm, secret);
        FrostSigner.Sig memory s = FrostSigner.sign(vm, k, digest);
        assertTrue(h.verifyDigest(k.x, k.parity, digest, s.rX, s.rY, s.z), "fuzz sign/verify");
        assertFalse(h.verifyDigest(k.x, k.parity ^ 1, digest, s.rX, s.rY, s.z), "fuzz parity");
    }

    /// @dev Never reverts on garbage.
    function testFuzz_garbageIsFalse(uint256 pkX, uint8 parity, bytes32 d, uint256 rX, uint256 rY, uint256 z)
        public
        view
    {
        assertFalse(h.verifyDigest(pkX, parity, d, rX, rY, z), "garbage verified");
    }

    function test_groupKeyValidity() public {
        FrostSigner.Key memory k = FrostSigner.key(vm, 7);
        assertTrue(h.isValidKey(k.x, k.parity), "valid key");
        assertTrue(h.isValidKey(k.x, k.parity ^ 1), "either parity is a point");
        assertFalse(h.isValidKey(0, 0), "x = 0");
        assertFalse(h.isValidKey(N, 0), "x = n");
        assertFalse(h.isValidKey(k.x, 2), "parity 2");
        assertFalse(h.isValidKey(5, 0), "x = 5 is not on secp256k1 (125 + 7 is not a square mod p)");
    }

    /// @dev Gas of the library verify (bytes32 fast path), excluding the harness call overhead.
    function test_gas_verifyLibrary() public view {
        Vector[] memory vs = _vectors();
        Vector memory v = vs[0];
        assertEq(v.msg.length, 32, "first vector has a 32-byte message");
        bytes32 d = bytes32(v.msg);
        uint256 g = gasleft();
        bool ok = FrostVerifier.verify(v.pkX, v.parity, d, v.rX, v.rY, v.z);
        g -= gasleft();
        assertTrue(ok, "verify");
        console.log("FrostVerifier.verify(bytes32) gas", g);
        assertLe(g, 5100, "verify gas goal");
    }
}
