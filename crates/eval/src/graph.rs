//! An undirected graph with non-negative edge weights, the input of
//! [`crate::leiden()`] and the output of [`crate::knn_graph`].
//!
//! Stored as compressed sparse rows holding both directions of every edge
//! (a self-loop once, in its own row), columns ascending within a row, so a
//! node's neighbours are one contiguous slice and iteration order is fixed.
//! Weights are `f64`: scanpy's connectivities are `f32`, but sums of many of
//! them (degrees, the total weight `m`) are not. Degrees follow igraph's and
//! leidenalg's convention: a self-loop of weight `w` adds `2 w` to its node's
//! degree, so that `sum_i k_i = 2 m`.

use crate::error::{Error, Result};

/// An undirected weighted graph on nodes `0..n_nodes`; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedGraph {
    /// `n_nodes + 1` offsets into `targets` and `weights`.
    offsets: Vec<usize>,
    /// Neighbour of each stored entry, ascending within a row.
    targets: Vec<u32>,
    /// Weight of each stored entry, > 0.
    weights: Vec<f64>,
    /// Weighted degree of each node (a self-loop counted twice).
    degrees: Vec<f64>,
    /// Sum of the weights of the undirected edges, each once.
    total_weight: f64,
    /// Number of undirected edges, self-loops included.
    n_edges: usize,
}

impl WeightedGraph {
    /// Builds the graph from undirected edges `(a, b, weight)`, each given in
    /// either orientation. Repeated pairs (`(a, b)` and `(b, a)` included) are
    /// summed, as igraph's parallel edges count in leidenalg; zero weights are
    /// dropped, as scipy's `eliminate_zeros` drops them from a connectivities
    /// matrix. So pass the upper triangle of a symmetric matrix, not all of it,
    /// or every weight counts twice.
    ///
    /// # Errors
    /// [`Error::EdgeNode`] for an endpoint `>= n_nodes` (or `n_nodes >= 2^32`),
    /// [`Error::EdgeWeight`] for a negative, NaN or infinite weight.
    pub fn from_edges(
        n_nodes: usize,
        edges: impl IntoIterator<Item = (usize, usize, f64)>,
    ) -> Result<Self> {
        let mut pairs: Vec<(u32, u32, f64)> = Vec::new();
        for (a, b, weight) in edges {
            let node = |v: usize| {
                u32::try_from(v)
                    .ok()
                    .filter(|&v| (v as usize) < n_nodes)
                    .ok_or(Error::EdgeNode {
                        edge: (a, b),
                        n_nodes,
                    })
            };
            let (lo, hi) = (node(a.min(b))?, node(a.max(b))?);
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(Error::EdgeWeight {
                    edge: (a, b),
                    weight,
                });
            }
            if weight > 0.0 {
                pairs.push((lo, hi, weight));
            }
        }
        pairs.sort_by_key(|&(a, b, _)| (a, b));
        pairs.dedup_by(|next, kept| {
            let same = (next.0, next.1) == (kept.0, kept.1);
            if same {
                kept.2 += next.2;
            }
            same
        });
        Ok(Self::from_sorted_pairs(n_nodes, &pairs))
    }

    /// The graph of distinct pairs `a <= b < n_nodes`, sorted, each with a weight > 0.
    pub(crate) fn from_sorted_pairs(n_nodes: usize, pairs: &[(u32, u32, f64)]) -> Self {
        let mut counts = vec![0_usize; n_nodes + 1];
        for &(a, b, _) in pairs {
            counts[a as usize + 1] += 1;
            if a != b {
                counts[b as usize + 1] += 1;
            }
        }
        let mut offsets = counts;
        for i in 0..n_nodes {
            offsets[i + 1] += offsets[i];
        }
        let stored = offsets[n_nodes];
        let mut targets = vec![0_u32; stored];
        let mut weights = vec![0.0_f64; stored];
        let mut degrees = vec![0.0_f64; n_nodes];
        let mut cursor = offsets[..n_nodes].to_vec();
        // Pairs sorted by (a, b): row b receives its entries a < b in ascending
        // a before any of its own pairs (b, c >= b), so every row ends sorted.
        for &(a, b, w) in pairs {
            let (a_, b_) = (a as usize, b as usize);
            targets[cursor[a_]] = b;
            weights[cursor[a_]] = w;
            cursor[a_] += 1;
            degrees[a_] += w;
            degrees[b_] += w;
            if a != b {
                targets[cursor[b_]] = a;
                weights[cursor[b_]] = w;
                cursor[b_] += 1;
            }
        }
        let total_weight = pairs.iter().map(|p| p.2).sum();
        Self {
            offsets,
            targets,
            weights,
            degrees,
            total_weight,
            n_edges: pairs.len(),
        }
    }

    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.degrees.len()
    }

    /// Number of undirected edges, self-loops included.
    pub fn n_edges(&self) -> usize {
        self.n_edges
    }

    /// Neighbours of `node` (ascending, itself if it has a self-loop) with the
    /// edge weights. Panics if `node >= n_nodes`, like slice indexing.
    pub fn neighbors(&self, node: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let range = self.offsets[node]..self.offsets[node + 1];
        self.targets[range.clone()]
            .iter()
            .zip(&self.weights[range])
            .map(|(&t, &w)| (t as usize, w))
    }

    /// Every undirected edge once, as `(a, b, weight)` with `a <= b`, sorted.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        (0..self.n_nodes()).flat_map(move |a| {
            self.neighbors(a)
                .filter(move |&(b, _)| b >= a)
                .map(move |(b, w)| (a, b, w))
        })
    }

    /// Weighted degree of each node, `k_i = sum_j A_ij` (a self-loop counted twice).
    pub fn degrees(&self) -> &[f64] {
        &self.degrees
    }

    /// Total edge weight `m`, each undirected edge once (`sum_i k_i = 2 m`).
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;

    #[test]
    fn edges_are_merged_symmetrised_and_sorted() -> Result<()> {
        let g = WeightedGraph::from_edges(
            4,
            [
                (2, 0, 1.0),
                (0, 2, 0.5),
                (1, 1, 2.0),
                (3, 1, 0.25),
                (0, 3, 0.0),
            ],
        )?;
        assert_eq!(g.n_nodes(), 4);
        assert_eq!(
            g.edges().collect::<Vec<_>>(),
            vec![(0, 2, 1.5), (1, 1, 2.0), (1, 3, 0.25)]
        );
        assert_eq!(g.n_edges(), 3);
        assert_eq!(g.neighbors(1).collect::<Vec<_>>(), [(1, 2.0), (3, 0.25)]);
        assert_eq!(g.neighbors(2).collect::<Vec<_>>(), [(0, 1.5)]);
        assert_abs_diff_eq!(g.total_weight(), 3.75);
        assert_eq!(g.degrees(), &[1.5, 4.25, 1.5, 0.25]);
        assert_abs_diff_eq!(g.degrees().iter().sum::<f64>(), 2.0 * g.total_weight());
        Ok(())
    }

    #[test]
    fn bad_edges_are_errors() {
        assert_eq!(
            WeightedGraph::from_edges(3, [(0, 3, 1.0)]),
            Err(Error::EdgeNode {
                edge: (0, 3),
                n_nodes: 3
            })
        );
        assert_eq!(
            WeightedGraph::from_edges(3, [(0, 1, -1.0)]),
            Err(Error::EdgeWeight {
                edge: (0, 1),
                weight: -1.0
            })
        );
        assert!(matches!(
            WeightedGraph::from_edges(3, [(0, 1, f64::NAN)]),
            Err(Error::EdgeWeight { .. })
        ));
    }
}
