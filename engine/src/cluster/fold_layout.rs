//! Where each output row of a fold comes from, by rank: the arithmetic that lets every shard
//! of a distributed fold be written by its own task.
//!
//! A fold's output is its layers in turn, then the rows without a score: layer `l` holds the
//! scored rows whose rank `r` (index in key order) has `r % L == l`, in rank order (reversed
//! for the odd layers of a zigzag fold); the unscored rows follow in key order, which is their
//! input order. So once the row counts are known, the rows of any output range are a few
//! strided rank ranges ([`Piece`]s), one per layer it touches. A shard (`rows_per_shard` rows
//! of the output, as a local COPY cuts them) is written by merging the sorted runs from a
//! [`Fence`] just before its first rank ([`RunIndex::fence`]), counting ranks exactly.

use crate::cluster::sorted_runs::{BLOCK_ROWS, Fence};
use crate::stages::FoldMode;

/// Output rows that are equally spaced ranks: `first, first + stride, ...` (`count` of
/// them), written in that order, or from the last down when `backwards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The lowest rank.
    pub first: u64,
    /// Rows.
    pub count: u64,
    /// Ranks between consecutive rows.
    pub stride: u64,
    /// Written from the highest rank down.
    pub backwards: bool,
}

impl Piece {
    /// The highest rank.
    pub fn last(&self) -> u64 {
        self.first + self.stride * (self.count - 1)
    }
}

/// The pieces of each shard of a fold of `rows` rows, `scored` of them with a score, into
/// `layers` layers, cut every `rows_per_shard` rows of the output. At least one shard, empty
/// when there are no rows.
pub fn shard_pieces(
    rows: u64,
    scored: u64,
    layers: u64,
    mode: FoldMode,
    rows_per_shard: u64,
) -> Vec<Vec<Piece>> {
    // The output in order, as (rows, piece of all its rows).
    let mut parts: Vec<Piece> = (0..layers)
        .filter(|layer| *layer < scored)
        .map(|layer| Piece {
            first: layer,
            count: (scored - layer).div_ceil(layers),
            stride: layers,
            backwards: mode == FoldMode::Zigzag && layer % 2 == 1,
        })
        .collect();
    if rows > scored {
        parts.push(Piece {
            first: scored,
            count: rows - scored,
            stride: 1,
            backwards: false,
        });
    }
    let mut shards = vec![Vec::new()];
    let mut room = rows_per_shard;
    for part in parts {
        let mut done = 0;
        while done < part.count {
            if room == 0 {
                shards.push(Vec::new());
                room = rows_per_shard;
            }
            let take = room.min(part.count - done);
            // Output rows done..done + take of the part: from its low end forward, from its
            // high end backward.
            let low = if part.backwards {
                part.count - done - take
            } else {
                done
            };
            shards.last_mut().expect("a shard").push(Piece {
                first: part.first + part.stride * low,
                count: take,
                stride: part.stride,
                backwards: part.backwards,
            });
            done += take;
            room -= take;
        }
    }
    shards
}

/// The first key of every block of every run: where the fences of a merge can be.
#[derive(Debug, Default)]
pub struct RunIndex {
    /// Each run's block keys and rows.
    runs: Vec<(Vec<i128>, u64)>,
    /// Every block key, sorted.
    keys: Vec<i128>,
}

impl RunIndex {
    /// The index of runs given as (first key of every block, rows).
    pub fn new(runs: Vec<(Vec<i128>, u64)>) -> Self {
        let mut keys: Vec<i128> = runs.iter().flat_map(|(keys, _)| keys.clone()).collect();
        keys.sort_unstable();
        Self { runs, keys }
    }

    /// Where a merge reading `piece` starts: for a forward piece a fence at or before its
    /// first rank, for a backward one a fence after its last rank; as close as the block keys
    /// allow (within a block per run).
    pub fn fence(&self, piece: &Piece) -> Fence {
        if piece.backwards {
            // The first key with at least `last + 1` rows surely below it.
            let needed = piece.last() + 1;
            let at = self
                .keys
                .partition_point(|key| self.rows_surely_below(*key) < needed);
            self.keys.get(at).map_or(Fence::End, |key| Fence::Key(*key))
        } else {
            // The last key with at most `first` rows possibly below it.
            let at = self
                .keys
                .partition_point(|key| self.rows_possibly_below(*key) <= piece.first);
            at.checked_sub(1)
                .map_or(Fence::Start, |at| Fence::Key(self.keys[at]))
        }
    }

    /// The most rows that may have a key below `key`: all rows of the blocks that start
    /// below it.
    fn rows_possibly_below(&self, key: i128) -> u64 {
        self.runs
            .iter()
            .map(|(keys, rows)| {
                let blocks = keys.partition_point(|k| *k < key) as u64;
                (blocks * BLOCK_ROWS as u64).min(*rows)
            })
            .sum()
    }

    /// The fewest rows that have a key below `key`: all rows of the blocks before the last
    /// block that starts below it, and that block's first row.
    fn rows_surely_below(&self, key: i128) -> u64 {
        self.runs
            .iter()
            .map(
                |(keys, _)| match keys.partition_point(|k| *k < key) as u64 {
                    0 => 0,
                    blocks => (blocks - 1) * BLOCK_ROWS as u64 + 1,
                },
            )
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ranks of a fold's output in order, as the local fold deals them.
    fn folded(rows: u64, scored: u64, layers: u64, mode: FoldMode) -> Vec<u64> {
        let mut out = Vec::new();
        for layer in 0..layers {
            let mut ranks: Vec<u64> = (layer..scored).step_by(layers as usize).collect();
            if mode == FoldMode::Zigzag && layer % 2 == 1 {
                ranks.reverse();
            }
            out.extend(ranks);
        }
        out.extend(scored..rows);
        out
    }

    fn expand(piece: &Piece) -> Vec<u64> {
        let mut ranks: Vec<u64> = (0..piece.count)
            .map(|i| piece.first + piece.stride * i)
            .collect();
        if piece.backwards {
            ranks.reverse();
        }
        ranks
    }

    #[test]
    fn shards_hold_the_folded_ranks_in_order() {
        for (rows, scored) in [(0, 0), (1, 1), (5, 0), (10, 10), (23, 17), (100, 99)] {
            for layers in [1, 2, 3, 5, 30] {
                for mode in [FoldMode::Ascending, FoldMode::Zigzag] {
                    for per_shard in [1, 4, 7, 1000] {
                        let shards = shard_pieces(rows, scored, layers, mode, per_shard);
                        let sizes: Vec<u64> = shards
                            .iter()
                            .map(|pieces| pieces.iter().map(|p| p.count).sum())
                            .collect();
                        let expected_shards = rows.div_ceil(per_shard).max(1) as usize;
                        assert_eq!(shards.len(), expected_shards, "{rows} {per_shard}");
                        assert!(sizes[..sizes.len() - 1].iter().all(|s| *s == per_shard));
                        let ranks: Vec<u64> = shards.iter().flatten().flat_map(expand).collect();
                        assert_eq!(
                            ranks,
                            folded(rows, scored, layers, mode),
                            "rows={rows} scored={scored} L={layers} {mode} per_shard={per_shard}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fences_are_on_the_right_side_of_a_piece() {
        // Three runs of interleaved keys: run r holds keys 3i + r.
        let runs: Vec<Vec<i128>> = (0..3)
            .map(|r| (0..5000).map(|i| 3 * i + r).collect())
            .collect();
        let index = RunIndex::new(
            runs.iter()
                .map(|keys| {
                    let firsts = keys.iter().step_by(BLOCK_ROWS).copied().collect();
                    (firsts, keys.len() as u64)
                })
                .collect(),
        );
        // Key k has rank k here.
        for first in [0u64, 1, 1023, 3072, 5000, 14_999] {
            for backwards in [false, true] {
                let piece = Piece {
                    first,
                    count: 1,
                    stride: 1,
                    backwards,
                };
                match (index.fence(&piece), backwards) {
                    (Fence::Start, false) => assert!(first < 3 * BLOCK_ROWS as u64),
                    (Fence::Key(key), false) => {
                        assert!(key as u64 <= first);
                        assert!(first - key as u64 <= 3 * BLOCK_ROWS as u64, "{first} {key}");
                    }
                    (Fence::Key(key), true) => {
                        assert!(key as u64 > first);
                        assert!(key as u64 - first <= 3 * BLOCK_ROWS as u64, "{first} {key}");
                    }
                    (Fence::End, true) => assert!(first + 3 * BLOCK_ROWS as u64 > 15_000),
                    other => panic!("{other:?} for {first}"),
                }
            }
        }
    }
}
