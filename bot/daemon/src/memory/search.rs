//! Brute-force cosine search: every vector of a scope in one contiguous `f32` matrix, scored by
//! dot product (vectors are unit length) and the best `k` kept in a small heap. 100k chunks of
//! 384 dimensions take a few milliseconds on one core, so no approximate index is needed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Vectors of one dimension, row after row.
#[derive(Debug, Clone, Default)]
pub struct VectorSet {
    dim: usize,
    data: Vec<f32>,
}

/// One ranked row: its index in the set and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub index: usize,
    pub score: f32,
}

/// Min-heap order on score, so the heap's top is the weakest of the best `k`.
#[derive(PartialEq)]
struct Weakest(Scored);

impl Eq for Weakest {}

impl PartialOrd for Weakest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Weakest {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then_with(|| self.0.index.cmp(&other.0.index))
    }
}

impl VectorSet {
    pub fn new(dim: usize) -> VectorSet {
        VectorSet {
            dim,
            data: Vec::new(),
        }
    }

    pub fn with_capacity(dim: usize, rows: usize) -> VectorSet {
        VectorSet {
            dim,
            data: Vec::with_capacity(dim * rows),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends a row; a vector of another dimension is refused (`false`).
    pub fn push(&mut self, vector: &[f32]) -> bool {
        if self.dim == 0 && self.data.is_empty() {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || self.dim == 0 {
            return false;
        }
        self.data.extend_from_slice(vector);
        true
    }

    /// The `k` rows most similar to `query`, best first.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Scored> {
        if k == 0 || query.len() != self.dim || self.dim == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Weakest> = BinaryHeap::with_capacity(k + 1);
        for (index, row) in self.data.chunks_exact(self.dim).enumerate() {
            let score = dot(row, query);
            if heap.len() < k {
                heap.push(Weakest(Scored { index, score }));
            } else if let Some(weakest) = heap.peek()
                && score > weakest.0.score
            {
                heap.pop();
                heap.push(Weakest(Scored { index, score }));
            }
        }
        let mut best: Vec<Scored> = heap.into_iter().map(|w| w.0).collect();
        best.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        best
    }
}

/// Dot product in eight independent lanes, which the compiler turns into SIMD.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in vector {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_similarity() {
        let mut set = VectorSet::new(3);
        for v in [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.7, 0.7, 0.0],
            [-1.0, 0.0, 0.0],
        ] {
            let mut v = v;
            normalize(&mut v);
            assert!(set.push(&v));
        }
        let best = set.top_k(&[1.0, 0.0, 0.0], 2);
        assert_eq!(best.iter().map(|s| s.index).collect::<Vec<_>>(), vec![0, 2]);
        assert!((best[0].score - 1.0).abs() < 1e-6);
        assert_eq!(set.top_k(&[1.0, 0.0, 0.0], 10).len(), 4);
        assert!(!set.push(&[1.0, 2.0]));
        assert!(set.top_k(&[1.0, 0.0], 3).is_empty());
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..13).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(dot(&a, &a), expected);
    }
}
