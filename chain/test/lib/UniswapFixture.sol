// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {ModuleFixture} from "./ModuleFixture.sol";
import {TestToken} from "../../contracts/TestToken.sol";
import {TreasuryModule} from "../../contracts/TreasuryModule.sol";

/// @notice The Uniswap V2 router functions the tests call.
interface IRouter {
    function WETH() external view returns (address);
    function addLiquidity(
        address tokenA,
        address tokenB,
        uint256 amountADesired,
        uint256 amountBDesired,
        uint256 amountAMin,
        uint256 amountBMin,
        address to,
        uint256 deadline
    ) external returns (uint256, uint256, uint256);
    function addLiquidityETH(
        address token,
        uint256 amountTokenDesired,
        uint256 amountTokenMin,
        uint256 amountETHMin,
        address to,
        uint256 deadline
    ) external payable returns (uint256, uint256, uint256);
    function swapExactTokensForTokens(
        uint256 amountIn,
        uint256 amountOutMin,
        address[] calldata path,
        address to,
        uint256 deadline
    ) external returns (uint256[] memory);
    function swapExactETHForTokens(uint256 amountOutMin, address[] calldata path, address to, uint256 deadline)
        external
        payable
        returns (uint256[] memory);
    function swapExactTokensForETH(
        uint256 amountIn,
        uint256 amountOutMin,
        address[] calldata path,
        address to,
        uint256 deadline
    ) external returns (uint256[] memory);
    function swapTokensForExactTokens(
        uint256 amountOut,
        uint256 amountInMax,
        address[] calldata path,
        address to,
        uint256 deadline
    ) external returns (uint256[] memory);
}

/// @notice ModuleFixture plus the real Uniswap V2 (npm v2-core / v2-periphery artifacts) and the
///         allow-list `treasury dev` deploys: each tracked token's `transfer`, the router's three swap
///         functions, the router as the only approval spender.
abstract contract UniswapFixture is ModuleFixture {
    string constant UNI = "/../.tools/node_modules/@uniswap";

    IRouter router;
    address weth;
    /// @dev An asset the Safe holds without a budget (an airdrop, LP tokens...).
    TestToken wild;

    function setUp() public virtual override {
        super.setUp();
        weth = _deployHex(string.concat(vm.projectRoot(), UNI, "/v2-periphery/build/WETH9.json"), "");
        address factory = _deployHex(
            string.concat(vm.projectRoot(), UNI, "/v2-core/build/UniswapV2Factory.json"), abi.encode(address(this))
        );
        router = IRouter(
            _deployHex(
                string.concat(vm.projectRoot(), UNI, "/v2-periphery/build/UniswapV2Router02.json"),
                abi.encode(factory, weth)
            )
        );
        wild = new TestToken("Airdrop", "AIR", 18);
        wild.mint(address(safe), 50_000e18);
        _pool(token, wild, 1_000_000e18, 1_000_000e18);
        token.mint(address(this), 1_000_000e18);
        token.approve(address(router), type(uint256).max);
        vm.deal(address(this), 1_000 ether);
        router.addLiquidityETH{value: 500 ether}(
            address(token), 1_000_000e18, 0, 0, address(this), block.timestamp
        );
        _configure(
            module.SET_CALL_ALLOWED(), abi.encode(address(router), IRouter.swapExactTokensForTokens.selector, true)
        );
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(router), IRouter.swapExactETHForTokens.selector, true));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(router), IRouter.swapExactTokensForETH.selector, true));
        _configure(module.SET_SPENDER_ALLOWED(), abi.encode(address(router), true));
    }

    /// @dev A pool of `a`/`b` seeded by this contract.
    function _pool(TestToken a, TestToken b, uint256 amountA, uint256 amountB) internal {
        a.mint(address(this), amountA);
        b.mint(address(this), amountB);
        a.approve(address(router), type(uint256).max);
        b.approve(address(router), type(uint256).max);
        router.addLiquidity(address(a), address(b), amountA, amountB, 0, 0, address(this), block.timestamp);
    }

    function _deployHex(string memory path, bytes memory args) internal returns (address a) {
        bytes memory code =
            bytes.concat(vm.parseBytes(string.concat("0x", vm.parseJsonString(vm.readFile(path), ".bytecode"))), args);
        assembly {
            a := create(0, add(code, 0x20), mload(code))
        }
        require(a != address(0), string.concat("deploy failed: ", path));
    }

    function _path(address a, address b) internal pure returns (address[] memory p) {
        p = new address[](2);
        p[0] = a;
        p[1] = b;
    }

    function _approveCall(address tokenAddr, address spender, uint256 amount)
        internal
        pure
        returns (TreasuryModule.Call memory)
    {
        return _c(tokenAddr, 0, abi.encodeWithSelector(TestToken.approve.selector, spender, amount));
    }

    function _swapCall(uint256 amountIn, address[] memory path, address to) internal view returns (TreasuryModule.Call memory) {
        return _c(
            address(router),
            0,
            abi.encodeCall(IRouter.swapExactTokensForTokens, (amountIn, 0, path, to, block.timestamp + 1 hours))
        );
    }

    /// @dev Signs and submits at tier 1; false if the module refused (any revert).
    function _try(TreasuryModule.Call[] memory calls) internal returns (bool) {
        Signed memory s = _sign(calls);
        try module.exec(s.calls, s.nonce, s.deadline, s.sig, s.rootSig) {
            return true;
        } catch {
            return false;
        }
    }

    function _calls2(TreasuryModule.Call memory a, TreasuryModule.Call memory b) internal pure returns (TreasuryModule.Call[] memory cs) {
        cs = new TreasuryModule.Call[](2);
        cs[0] = a;
        cs[1] = b;
    }
}
