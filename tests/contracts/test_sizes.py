"""Every contract the protocol deploys stays under the EIP-170 code-size limit.

EIP-170 (Spurious Dragon, on every chain since) refuses to create a contract whose runtime code is longer than
24,576 bytes (0x6000). The size is that of each artifact's ``deployedBytecode`` in the project brownie loaded for this
run (compiled from the current sources, ``evm_version: istanbul``, optimizer 200 runs, as deployed); immutables are
zero-filled placeholders of their final length, so the size is exact. Contracts deployed: every non-abstract
contract or library under ``contracts/`` outside ``test`` folders (Clearinghouse, ClearinghouseAdmin,
LiquidationAuction, their libraries, and whatever is added later), not interfaces, abstract bases or test tokens.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from brownie import project

EIP170_MAX_CODE_SIZE = 24_576  # bytes; creating longer code fails
MUST_MEASURE = {"Clearinghouse", "ClearinghouseAdmin", "LiquidationAuction"}


def deployed_sizes() -> dict[str, int]:
    """Runtime code size in bytes of every deployable project contract (not test ones), from the loaded build."""
    build = project.get_loaded_projects()[0]._build
    sizes = {}
    for name, data in build.items():
        source = PurePosixPath(str(data.get("sourcePath") or ""))
        if not source.parts or source.parts[0] != "contracts" or "test" in source.parts[1:-1]:
            continue  # OpenZeppelin, interfaces/ of dependencies, test tokens and harnesses
        code = str(data.get("deployedBytecode") or "").removeprefix("0x")
        if data.get("type") == "interface" or not code:
            continue  # interfaces and abstract contracts have no runtime code
        sizes[name] = len(code) // 2
    return sizes


def test_every_deployed_contract_is_under_the_eip170_limit():
    sizes = deployed_sizes()
    print("\nruntime code size (EIP-170 limit 24,576 bytes):")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {size:>7,} bytes  headroom {EIP170_MAX_CODE_SIZE - size:>7,}")
    missing = MUST_MEASURE - sizes.keys()
    assert not missing, f"no runtime code found for {sorted(missing)}: is the build complete?"
    over = {n: s for n, s in sizes.items() if s > EIP170_MAX_CODE_SIZE}
    assert not over, f"over the EIP-170 limit of {EIP170_MAX_CODE_SIZE:,} bytes: {over}"


def test_artifact_size_is_what_a_deployment_stores(accounts):
    """The size above is the deployed size: deploy the protocol as the auction tests and the gas script do
    (tests/auction/conftest.py ``deploy_core``: libraries linked, immutables set) and compare each contract's
    ``eth_getCode`` length with its artifact's."""
    import sys
    from pathlib import Path

    import brownie

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)
    from tests.auction.conftest import deploy_core

    core = deploy_core(accounts, brownie.AuctionTestToken, brownie.Clearinghouse, brownie.ClearinghouseAdmin,
                       brownie.LiquidationAuction)
    deployed = {"Clearinghouse": core.ch.address, "ClearinghouseAdmin": core.ch.admin(),
                "LiquidationAuction": core.auction.address}
    sizes = deployed_sizes()
    for name in sizes:  # linked libraries and anything else deploy_core deployed
        container = getattr(brownie, name, None)
        if name not in deployed and container is not None and len(container):
            deployed[name] = container[-1].address
    assert MUST_MEASURE <= deployed.keys()
    on_chain = {name: len(brownie.web3.eth.get_code(addr)) for name, addr in deployed.items()}
    assert on_chain == {name: sizes[name] for name in deployed}
