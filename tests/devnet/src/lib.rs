//! The local devnet and every test fixture of treasury, used by `treasury dev`, the benches and
//! the tests: anvil, the deployed world, SoftHSM2 tokens, child processes and a test quorum.
//!
//! # Layout
//! - [`anvil`]: a private anvil on a free port, and anvil's development keys.
//! - [`artifacts`]: third-party contracts (Safe, Uniswap V2, WETH) from the npm packages.
//! - [`world`]: deploying the world (Safe + module, Uniswap V2, tokens, feeds) and configuring it.
//! - [`fixture`]: a deployed world on a private anvil, for tests ([`fixture::TestChain`]).
//! - [`netns`]: Linux network namespaces (a veth pair each) for nodes "in other regions".
//! - [`nodes`]: signer nodes as processes, their directories, and the quorum latency bench.
//! - [`ops`]: operations the tests ask signers to sign.
//! - [`quorum`]: a FROST quorum held in memory, signing as the nodes would.
//! - [`postgres`]: a private PostgreSQL cluster in a temporary folder.
//! - [`procs`]: child processes with logs that die with their parent.
//! - [`series`]: bench samples summarised as p50 / p99 milliseconds.
//! - [`softhsm`]: a private SoftHSM2 configuration and token folder.
//! - [`wan`]: a TCP proxy that puts a wide-area link (delay, jitter, stalls, resets) on loopback.
//! - [`wan_bench`]: the quorum bench with each node behind such a link (`signer bench --rtt-ms`).
pub mod anvil;
pub mod artifacts;
pub mod fixture;
pub mod keeper;
pub mod netns;
pub mod nodes;
pub mod ops;
pub mod postgres;
pub mod procs;
pub mod quorum;
pub mod replay_bench;
pub mod series;
pub mod softhsm;
pub mod wan;
pub mod wan_bench;
pub mod world;

pub use anvil::Anvil;
pub use fixture::{TestChain, dev_key, write_keystore};
pub use postgres::Postgres;
pub use quorum::TestQuorum;
pub use series::Series;
pub use world::{DeployConfig, Deployment, GroupKey};
