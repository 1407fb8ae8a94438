//! The fold's keys sorted and merged on every thread.
//!
//! A fold without a memory limit sorts each input partition's keys when that partition's input
//! ends, and then merges the partitions' keys into one order. Between the end of the input
//! and the first output row, nothing else can run: on one thread each, the last partition's
//! sort and the merge leave every other thread idle (about a tenth of a 1M-row JSON lines
//! fold on 2 threads, and more with more threads). Here a partition's keys are sorted as
//! several runs side by side ([`sort_runs`]), and the merge of all runs is cut into as many
//! ranges of the output as there are threads ([`merge_runs`]): each cut is found by a binary
//! search over key values, so every range holds its exact share of the keys and is merged on
//! its own thread.
//!
//! Equal keys (possible only across partitions) come out in the order of their runs, as
//! they would from one sequential merge.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

/// Keys a run holds at least: a thread is not worth starting for fewer.
const MIN_RUN: usize = 1 << 16;

/// Sorts `keys` as at most `threads` runs of consecutive keys, side by side; returns the
/// runs, in order.
pub fn sort_runs(keys: &mut [i128], threads: usize) -> Vec<Range<usize>> {
    let runs = threads.clamp(1, keys.len().div_ceil(MIN_RUN).max(1));
    let size = keys.len().div_ceil(runs).max(1);
    std::thread::scope(|scope| {
        let mut chunks = keys.chunks_mut(size);
        let first = chunks.next();
        for chunk in chunks {
            scope.spawn(move || chunk.sort_unstable());
        }
        if let Some(chunk) = first {
            chunk.sort_unstable();
        }
    });
    (0..keys.len())
        .step_by(size)
        .map(|start| start..(start + size).min(keys.len()))
        .collect()
}

/// Merges sorted `runs` into (key, run) order on up to `threads` threads: `place(run, key)`
/// of every key.
pub fn merge_runs<T, F>(runs: &[&[i128]], threads: usize, place: F) -> Vec<T>
where
    T: Copy + Default + Send,
    F: Fn(usize, i128) -> T + Sync,
{
    let total: usize = runs.iter().map(|r| r.len()).sum();
    let parts = threads.clamp(1, total.div_ceil(MIN_RUN).max(1));
    let ranks: Vec<usize> = (0..=parts).map(|j| total * j / parts).collect();
    let cuts: Vec<Vec<usize>> = ranks.iter().map(|&rank| cut(runs, rank)).collect();
    let mut merged = vec![T::default(); total];
    std::thread::scope(|scope| {
        let mut rest = merged.as_mut_slice();
        for (j, bounds) in cuts.windows(2).enumerate() {
            let (out, tail) = rest.split_at_mut(ranks[j + 1] - ranks[j]);
            rest = tail;
            let place = &place;
            scope.spawn(move || merge_into(runs, &bounds[0], &bounds[1], out, place));
        }
    });
    merged
}

/// Merges `runs[r][from[r]..to[r]]` of every run into `out`, in (key, run) order.
fn merge_into<T>(
    runs: &[&[i128]],
    from: &[usize],
    to: &[usize],
    out: &mut [T],
    place: &impl Fn(usize, i128) -> T,
) {
    // The smallest unmerged key of each run: (key, run, index of the key).
    let mut heads: BinaryHeap<Reverse<(i128, usize, usize)>> = (0..runs.len())
        .filter(|&r| from[r] < to[r])
        .map(|r| Reverse((runs[r][from[r]], r, from[r])))
        .collect();
    let mut slots = out.iter_mut();
    while let Some(mut head) = heads.peek_mut() {
        let Reverse((key, r, i)) = *head;
        *slots.next().expect("as many slots as keys") = place(r, key);
        if i + 1 < to[r] {
            *head = Reverse((runs[r][i + 1], r, i + 1));
        } else {
            std::collections::binary_heap::PeekMut::pop(head);
        }
    }
}

/// Where the first `rank` keys of the merged order end in each run.
fn cut(runs: &[&[i128]], rank: usize) -> Vec<usize> {
    // Keys as unsigned numbers in the same order, so that the search below cannot overflow.
    let unsigned = |key: i128| (key as u128) ^ (1 << 127);
    let at_most = |v: u128| -> usize {
        runs.iter()
            .map(|r| r.partition_point(|&k| unsigned(k) <= v))
            .sum()
    };
    if rank == 0 {
        return vec![0; runs.len()];
    }
    // The smallest key value with at least `rank` keys at or below it.
    let (mut low, mut high) = (0u128, u128::MAX);
    while low < high {
        let mid = low + (high - low) / 2;
        if at_most(mid) >= rank {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    // Keys below it all come first; of the keys equal to it, those of earlier runs.
    let below: Vec<usize> = runs
        .iter()
        .map(|r| r.partition_point(|&k| unsigned(k) < low))
        .collect();
    let mut wanted = rank - below.iter().sum::<usize>();
    runs.iter()
        .zip(below)
        .map(|(r, below)| {
            let equal = r.partition_point(|&k| unsigned(k) <= low) - below;
            let taken = equal.min(wanted);
            wanted -= taken;
            below + taken
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{cut, merge_runs, sort_runs};

    /// A small deterministic generator, so that the test needs no dependency.
    fn keys(seed: u64, n: usize, distinct: u64) -> Vec<i128> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = (state >> 33) % distinct;
                // Both signs and the extremes of i128, as order keys have.
                match v % 5 {
                    0 => i128::MIN + v as i128,
                    1 => i128::MAX - v as i128,
                    2 => -(v as i128),
                    _ => v as i128,
                }
            })
            .collect()
    }

    /// Sorting in runs and merging in parts gives the order of one stable sort by key, ties
    /// in run order, whatever the number of threads.
    #[test]
    fn runs_merge_as_one_sort() {
        for (sizes, distinct) in [
            (vec![200_000, 150_001, 0, 70_000], 1_000),
            (vec![300_000], 1 << 40),
            (vec![5, 0, 3], 2),
            (vec![], 1),
        ] {
            let mut runs: Vec<Vec<i128>> = Vec::new();
            for (p, &n) in sizes.iter().enumerate() {
                let mut partition = keys(p as u64 + 1, n, distinct);
                for range in sort_runs(&mut partition, 3) {
                    runs.push(partition[range].to_vec());
                }
            }
            assert!(runs.iter().all(|r| r.is_sorted()));
            let slices: Vec<&[i128]> = runs.iter().map(Vec::as_slice).collect();
            let mut want: Vec<(i128, usize)> = slices
                .iter()
                .enumerate()
                .flat_map(|(r, keys)| keys.iter().map(move |&k| (k, r)))
                .collect();
            want.sort();
            for threads in [1, 2, 3, 8] {
                let got = merge_runs(&slices, threads, |r, k| (k, r));
                assert_eq!(got, want, "{sizes:?} on {threads} threads");
            }
        }
    }

    /// A cut through equal keys takes them from the earlier runs first.
    #[test]
    fn cuts_split_ties_in_run_order() {
        let runs: [&[i128]; 3] = [&[1, 5, 5], &[5, 9], &[0, 5]];
        assert_eq!(cut(&runs, 0), [0, 0, 0]);
        assert_eq!(cut(&runs, 2), [1, 0, 1]);
        assert_eq!(cut(&runs, 4), [3, 0, 1]);
        assert_eq!(cut(&runs, 5), [3, 1, 1]);
        assert_eq!(cut(&runs, 6), [3, 1, 2]);
        assert_eq!(cut(&runs, 7), [3, 2, 2]);
    }
}
