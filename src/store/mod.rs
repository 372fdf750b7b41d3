//! Where a fleet keeps what its nodes share (docs/cluster.md): `etcd.rs` reads, writes,
//! lists and watches keys under the cluster's prefix and takes locks that end with their
//! holder; `seal.rs` encrypts the secrets among them with the cluster key before they leave
//! the node.
//!
//! A node without `[cluster]` keeps its state in `state_dir` as before. The parts that move
//! onto the store (ACME accounts and certificates, the local CA, the admin API's
//! certificates, ticket keys) read and write through this module, never etcd directly.

pub mod etcd;
pub mod seal;

pub use etcd::{Change, Etcd, Follow, Followed, Held, Lease, Listing, StoreError, Watch};
pub use seal::{ClusterKey, KeyError, SealError};
