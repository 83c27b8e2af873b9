//! Negentropy (NIP-77 set reconciliation), protocol v1, our own
//! implementation: a codec, one reconciler for both roles generic over a
//! [`Storage`], and storages. Byte-for-byte identical to the reference
//! implementation (checked against its recorded traces in
//! `tests/negentropy_vectors.rs`).

pub mod codec;
mod reconcile;
mod subrange;
mod tree;
mod vector;

pub use codec::{Bound, Item, NegError, PROTOCOL_VERSION};
pub use reconcile::{Diff, Negentropy, Storage};
pub use subrange::SubRange;
pub use tree::{StandaloneTree, TreeReader, TreeWriter};
pub use vector::VectorStorage;
