//! Batches that waste little compute on padding.
//!
//! Documents are sorted by token count (longest first, ties by input position) and cut into
//! batches; each batch is padded only to its own longest document. Results go back to input
//! positions, so callers keep input order.

/// Groups positions `0..lengths.len()` into batches of at most `max_docs` documents and at
/// most `max_tokens` padded tokens (a batch always holds at least one document).
pub fn length_batches(lengths: &[usize], max_docs: usize, max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first, so the first document sets the batch's padded width.
        let width = current.first().map_or(lengths[i], |&f| lengths[f]).max(1);
        if !current.is_empty()
            && (current.len() >= max_docs.max(1) || (current.len() + 1) * width > max_tokens)
        {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Padded tokens over real tokens of a batching: 1.0 means no padding at all.
pub fn padding_overhead(lengths: &[usize], batches: &[Vec<usize>]) -> f64 {
    let real: usize = lengths.iter().sum();
    let padded: usize = batches
        .iter()
        .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap_or(0))
        .sum();
    padded as f64 / real.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_once_and_limits_kept() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 500 + 1).collect();
        let batches = length_batches(&lengths, 16, 2048);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        for b in &batches {
            let width = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() <= 16);
            assert!(
                b.len() == 1 || b.len() * width <= 2048,
                "{} x {width}",
                b.len()
            );
        }
        // Random lengths in 1..=500 in input order would pad to ~2x; sorted, almost nothing.
        assert!(padding_overhead(&lengths, &batches) < 1.05);
        let unsorted: Vec<Vec<usize>> = (0..1000)
            .collect::<Vec<_>>()
            .chunks(16)
            .map(<[usize]>::to_vec)
            .collect();
        assert!(padding_overhead(&lengths, &unsorted) > 1.5);
    }

    #[test]
    fn oversized_document_gets_its_own_batch() {
        let batches = length_batches(&[10, 5000, 10], 8, 100);
        assert_eq!(batches, vec![vec![1], vec![0, 2]]);
        assert!(length_batches(&[], 8, 100).is_empty());
    }
}
