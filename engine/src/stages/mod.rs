//! The DELT stages as plan nodes and executors: folding (`fold_order`), selection (`top_k`,
//! `top_r`) and the seeded shuffle key (`shuffle_order`).
//!
//! Owns: the logical node and its shared types (`node`: [`StageNode`], [`FoldMode`],
//! [`Selection`]), the order key every stage sorts by (`order_key`), the executors (`fold`,
//! `fold_in_memory`, `select`), the parallel key sort (`key_runs`), the spilling buffer
//! (`spill`) and the shuffle key (`shuffle`).
//! May import: `io::in_order` (ordered blocking work) and the crate's error type. Never `sql`:
//! the SQL rewrite and planner build these nodes, not the other way round.

pub mod fold;
pub mod fold_in_memory;
pub mod key_runs;
pub mod node;
pub mod order_key;
pub mod select;
pub mod shuffle;
pub mod spill;

pub use node::{FoldMode, Selection, Stage, StageNode};
